"""Test doubles shipped with U-Partners for tests and the local demo.

``fakes.rapidpro`` is a contract fake of the RapidPro API v2: it answers the API calls U-Partners
makes and records them; it does not run flows.
"""
