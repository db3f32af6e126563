"""Importing an org from CasePro, the reading side: what is read (records.py), from CasePro's
PostgreSQL database, read-only (source.py) or from its tickets_migrate files
(migrate_files.py), and its label rules in our rule language (rules.py). Nothing here writes
into U-Partners."""
