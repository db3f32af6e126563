-- A CasePro database, for testing the importer's reader: the tables an import reads (and the
-- columns it must not read, such as contacts' names and URNs), with the names, types and
-- constraints of CasePro's Django models (v1.13). Written for U-Partners' tests; tests/casepro/
-- database.py loads it.
--
-- The tables come first, the foreign keys and indexes after the marker line below: the loader
-- creates the tables, fills them with COPY, then adds the rest (as pg_restore does), so that a
-- benchmark's million messages are not checked one row at a time. Django declares its foreign
-- keys DEFERRABLE INITIALLY DEFERRED; so does this file.
--
-- contacts_contact.fields is an hstore. Where the extension is not available (the statement
-- below fails), the loader leaves it out and makes the column jsonb instead: the reader casts
-- the column to jsonb either way.

CREATE EXTENSION IF NOT EXISTS hstore;

CREATE TABLE auth_user (
    id serial PRIMARY KEY,
    password varchar(128) NOT NULL,
    last_login timestamptz,
    is_superuser boolean NOT NULL,
    username varchar(150) NOT NULL UNIQUE,
    first_name varchar(150) NOT NULL,
    last_name varchar(150) NOT NULL,
    email varchar(254) NOT NULL,
    is_staff boolean NOT NULL,
    is_active boolean NOT NULL,
    date_joined timestamptz NOT NULL
);

CREATE TABLE orgs_org (
    id serial PRIMARY KEY,
    is_active boolean NOT NULL,
    created_on timestamptz NOT NULL,
    modified_on timestamptz NOT NULL,
    name varchar(128) NOT NULL,
    language varchar(64),
    subdomain varchar(255) NOT NULL UNIQUE,
    domain varchar(255) UNIQUE,
    timezone varchar(63) NOT NULL,
    config jsonb,
    logo varchar(255),
    created_by_id integer NOT NULL,
    modified_by_id integer NOT NULL
);

CREATE TABLE orgs_org_administrators (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    user_id integer NOT NULL,
    UNIQUE (org_id, user_id)
);

CREATE TABLE orgs_org_editors (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    user_id integer NOT NULL,
    UNIQUE (org_id, user_id)
);

CREATE TABLE orgs_org_viewers (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    user_id integer NOT NULL,
    UNIQUE (org_id, user_id)
);

CREATE TABLE orgs_orgbackend (
    id serial PRIMARY KEY,
    is_active boolean NOT NULL,
    created_on timestamptz NOT NULL,
    modified_on timestamptz NOT NULL,
    slug varchar(255) NOT NULL,
    api_token varchar(128) NOT NULL,
    host varchar(128) NOT NULL,
    backend_type varchar(256) NOT NULL,
    org_id integer NOT NULL,
    created_by_id integer NOT NULL,
    modified_by_id integer NOT NULL,
    UNIQUE (org_id, slug)
);

CREATE TABLE profiles_profile (
    id serial PRIMARY KEY,
    full_name varchar(128),
    change_password boolean NOT NULL,
    must_use_faq boolean NOT NULL,
    is_email_valid boolean NOT NULL,
    user_id integer NOT NULL UNIQUE
);

CREATE TABLE rules_rule (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    tests text NOT NULL,
    actions text NOT NULL
);

CREATE TABLE msgs_label (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    uuid varchar(36) UNIQUE,
    name varchar(64) NOT NULL,
    description varchar(255) NOT NULL,
    is_synced boolean NOT NULL,
    rule_id integer UNIQUE,
    is_active boolean NOT NULL,
    created_on timestamptz
);

CREATE TABLE msgs_label_watchers (
    id serial PRIMARY KEY,
    label_id integer NOT NULL,
    user_id integer NOT NULL,
    UNIQUE (label_id, user_id)
);

CREATE TABLE cases_partner (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    name varchar(128) NOT NULL,
    description varchar(255),
    primary_contact_id integer,
    is_restricted boolean NOT NULL,
    logo varchar(255),
    is_active boolean NOT NULL
);

CREATE TABLE cases_partner_users (
    id serial PRIMARY KEY,
    partner_id integer NOT NULL,
    user_id integer NOT NULL,
    UNIQUE (partner_id, user_id)
);

CREATE TABLE cases_partner_labels (
    id serial PRIMARY KEY,
    partner_id integer NOT NULL,
    label_id integer NOT NULL,
    UNIQUE (partner_id, label_id)
);

CREATE TABLE contacts_group (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    uuid varchar(36) UNIQUE,
    name varchar(64) NOT NULL,
    count integer,
    is_dynamic boolean NOT NULL,
    created_on timestamptz NOT NULL,
    is_active boolean NOT NULL,
    is_visible boolean NOT NULL,
    suspend_from boolean NOT NULL
);

CREATE TABLE contacts_field (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    key varchar(36) NOT NULL,
    label varchar(36),
    value_type char(1) NOT NULL,
    is_active boolean NOT NULL,
    is_visible boolean NOT NULL,
    UNIQUE (org_id, key)
);

CREATE TABLE contacts_contact (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    uuid varchar(36) NOT NULL UNIQUE,
    name varchar(128),
    fields hstore,
    language varchar(3),
    urns varchar(255)[] NOT NULL,
    is_active boolean NOT NULL,
    is_blocked boolean NOT NULL,
    is_stopped boolean NOT NULL,
    is_stub boolean NOT NULL,
    created_on timestamptz NOT NULL
);

CREATE TABLE contacts_contact_groups (
    id serial PRIMARY KEY,
    contact_id integer NOT NULL,
    group_id integer NOT NULL,
    UNIQUE (contact_id, group_id)
);

CREATE TABLE contacts_contact_suspended_groups (
    id serial PRIMARY KEY,
    contact_id integer NOT NULL,
    group_id integer NOT NULL,
    UNIQUE (contact_id, group_id)
);

CREATE TABLE msgs_message (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    backend_id integer NOT NULL UNIQUE,
    contact_id integer NOT NULL,
    type char(1) NOT NULL,
    text text NOT NULL,
    is_flagged boolean NOT NULL,
    is_archived boolean NOT NULL,
    is_handled boolean NOT NULL,
    is_active boolean NOT NULL,
    has_labels boolean NOT NULL,
    created_on timestamptz NOT NULL,
    modified_on timestamptz,
    locked_on timestamptz,
    locked_by_id integer,
    case_id integer
);

CREATE TABLE msgs_message_labels (
    id serial PRIMARY KEY,
    message_id integer NOT NULL,
    label_id integer NOT NULL,
    message_is_archived boolean NOT NULL,
    message_is_flagged boolean NOT NULL,
    message_created_on timestamptz NOT NULL,
    UNIQUE (message_id, label_id)
);

CREATE TABLE msgs_outgoing (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    partner_id integer,
    activity char(1) NOT NULL,
    text text NOT NULL,
    backend_id bigint,
    backend_broadcast_id integer,
    contact_id integer,
    urn varchar(255),
    reply_to_id integer,
    case_id integer,
    created_by_id integer NOT NULL,
    created_on timestamptz NOT NULL
);

CREATE TABLE cases_case (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    assignee_id integer NOT NULL,
    user_assignee_id integer,
    contact_id integer NOT NULL,
    initial_message_id integer UNIQUE,
    summary varchar(255) NOT NULL,
    opened_on timestamptz NOT NULL,
    closed_on timestamptz
);

CREATE TABLE cases_case_labels (
    id serial PRIMARY KEY,
    case_id integer NOT NULL,
    label_id integer NOT NULL,
    UNIQUE (case_id, label_id)
);

CREATE TABLE cases_case_watchers (
    id serial PRIMARY KEY,
    case_id integer NOT NULL,
    user_id integer NOT NULL,
    UNIQUE (case_id, user_id)
);

CREATE TABLE cases_caseaction (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    case_id integer NOT NULL,
    action char(1) NOT NULL,
    created_by_id integer NOT NULL,
    created_on timestamptz NOT NULL,
    assignee_id integer,
    user_assignee_id integer,
    label_id integer,
    note varchar(1024)
);

CREATE TABLE msgs_faq (
    id serial PRIMARY KEY,
    org_id integer NOT NULL,
    question varchar(255) NOT NULL,
    answer text NOT NULL,
    language varchar(3),
    parent_id integer
);

CREATE TABLE msgs_faq_labels (
    id serial PRIMARY KEY,
    faq_id integer NOT NULL,
    label_id integer NOT NULL,
    UNIQUE (faq_id, label_id)
);

-- AFTER LOAD
-- Foreign keys and indexes, added once the tables are filled.

ALTER TABLE orgs_org
    ADD FOREIGN KEY (created_by_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (modified_by_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE orgs_org_administrators
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (user_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE orgs_org_editors
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (user_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE orgs_org_viewers
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (user_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE orgs_orgbackend
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE profiles_profile
    ADD FOREIGN KEY (user_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE rules_rule
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE msgs_label
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (rule_id) REFERENCES rules_rule DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE msgs_label_watchers
    ADD FOREIGN KEY (label_id) REFERENCES msgs_label DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (user_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE cases_partner
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (primary_contact_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE cases_partner_users
    ADD FOREIGN KEY (partner_id) REFERENCES cases_partner DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (user_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE cases_partner_labels
    ADD FOREIGN KEY (partner_id) REFERENCES cases_partner DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (label_id) REFERENCES msgs_label DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE contacts_group
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE contacts_field
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE contacts_contact
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE contacts_contact_groups
    ADD FOREIGN KEY (contact_id) REFERENCES contacts_contact DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (group_id) REFERENCES contacts_group DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE contacts_contact_suspended_groups
    ADD FOREIGN KEY (contact_id) REFERENCES contacts_contact DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (group_id) REFERENCES contacts_group DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE msgs_message
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (contact_id) REFERENCES contacts_contact DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (locked_by_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (case_id) REFERENCES cases_case DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE msgs_message_labels
    ADD FOREIGN KEY (message_id) REFERENCES msgs_message DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (label_id) REFERENCES msgs_label DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE msgs_outgoing
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (partner_id) REFERENCES cases_partner DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (contact_id) REFERENCES contacts_contact DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (reply_to_id) REFERENCES msgs_message DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (case_id) REFERENCES cases_case DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (created_by_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE cases_case
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (assignee_id) REFERENCES cases_partner DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (user_assignee_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (contact_id) REFERENCES contacts_contact DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (initial_message_id) REFERENCES msgs_message DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE cases_case_labels
    ADD FOREIGN KEY (case_id) REFERENCES cases_case DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (label_id) REFERENCES msgs_label DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE cases_case_watchers
    ADD FOREIGN KEY (case_id) REFERENCES cases_case DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (user_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE cases_caseaction
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (case_id) REFERENCES cases_case DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (created_by_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (assignee_id) REFERENCES cases_partner DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (user_assignee_id) REFERENCES auth_user DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (label_id) REFERENCES msgs_label DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE msgs_faq
    ADD FOREIGN KEY (org_id) REFERENCES orgs_org DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (parent_id) REFERENCES msgs_faq DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE msgs_faq_labels
    ADD FOREIGN KEY (faq_id) REFERENCES msgs_faq DEFERRABLE INITIALLY DEFERRED,
    ADD FOREIGN KEY (label_id) REFERENCES msgs_label DEFERRABLE INITIALLY DEFERRED;

-- Django indexes every foreign key; these are the ones the reader's queries lean on.
CREATE INDEX ON msgs_message (org_id);
CREATE INDEX ON msgs_message (contact_id);
CREATE INDEX ON msgs_message (case_id);
CREATE INDEX ON msgs_outgoing (org_id);
CREATE INDEX ON msgs_outgoing (case_id);
CREATE INDEX ON contacts_contact (org_id);
CREATE INDEX ON cases_case (org_id);
CREATE INDEX ON cases_case (contact_id);
CREATE INDEX ON cases_caseaction (org_id);
CREATE INDEX ON cases_caseaction (case_id);
CREATE INDEX ON msgs_label (org_id);
CREATE INDEX ON contacts_group (org_id);
