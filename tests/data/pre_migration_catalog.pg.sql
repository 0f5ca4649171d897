
CREATE TABLE public.agencies (
    id character varying(64) NOT NULL,
    name character varying(200) NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE public.audit_datasets (
    seq integer NOT NULL,
    dataset_id character varying(64) NOT NULL,
    agency_id character varying(64) NOT NULL
);

CREATE TABLE public.audit_head (
    id integer NOT NULL,
    seq integer NOT NULL,
    hash character varying(64) NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    key_id character varying(16),
    mac character varying(64)
);

CREATE SEQUENCE public.audit_head_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.audit_head_id_seq OWNED BY public.audit_head.id;

CREATE TABLE public.audit_log (
    seq integer NOT NULL,
    at character varying(40) NOT NULL,
    action character varying(32) NOT NULL,
    principal_id character varying(64) NOT NULL,
    agency_id character varying(64) NOT NULL,
    datasets_json text NOT NULL,
    columns_json text NOT NULL,
    row_count bigint,
    sql_fingerprint character varying(64),
    outcome character varying(16) NOT NULL,
    detail_json text NOT NULL,
    prev_hash character varying(64) NOT NULL,
    hash character varying(64) NOT NULL,
    owners_json text,
    binds_json text,
    key_id character varying(16)
);

CREATE SEQUENCE public.audit_log_seq_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.audit_log_seq_seq OWNED BY public.audit_log.seq;

CREATE TABLE public.datasets (
    id character varying(64) NOT NULL,
    agency_id character varying(64) NOT NULL,
    title character varying(400) NOT NULL,
    sharing character varying(16) NOT NULL,
    classification character varying(16) NOT NULL,
    manifest_json text NOT NULL,
    registered_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);

CREATE TABLE public.grants (
    id character varying(32) NOT NULL,
    dataset_id character varying(64) NOT NULL,
    agency_id character varying(64) NOT NULL,
    requested_by character varying(64) NOT NULL,
    purpose text NOT NULL,
    columns_json text,
    row_filter_json text,
    unmask_json text NOT NULL,
    expires_at timestamp with time zone,
    status character varying(16) NOT NULL,
    requested_at timestamp with time zone NOT NULL,
    due_at timestamp with time zone NOT NULL,
    decided_at timestamp with time zone,
    decided_by character varying(64),
    reason text,
    changed_at timestamp with time zone NOT NULL
);

CREATE TABLE public.ops_alerts (
    id character varying(36) NOT NULL,
    rule_id character varying(100) NOT NULL,
    key character varying(400) NOT NULL,
    open_key character varying(520),
    status character varying(16) NOT NULL,
    severity character varying(16) NOT NULL,
    title character varying(400) NOT NULL,
    source character varying(200) NOT NULL,
    detail_json text NOT NULL,
    count integer NOT NULL,
    opened_at timestamp with time zone NOT NULL,
    last_seen_at timestamp with time zone NOT NULL,
    acked_by character varying(64),
    acked_at timestamp with time zone,
    resolved_by character varying(64),
    resolved_at timestamp with time zone,
    note text
);

CREATE TABLE public.ops_order_events (
    id integer NOT NULL,
    order_id character varying(36) NOT NULL,
    action character varying(32) NOT NULL,
    actor character varying(64) NOT NULL,
    at timestamp with time zone NOT NULL,
    status character varying(16) NOT NULL,
    note text,
    data_json text
);

CREATE SEQUENCE public.ops_order_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.ops_order_events_id_seq OWNED BY public.ops_order_events.id;

CREATE TABLE public.ops_orders (
    id character varying(36) NOT NULL,
    target character varying(64) NOT NULL,
    status character varying(16) NOT NULL,
    priority character varying(16) NOT NULL,
    instructions text NOT NULL,
    alert_id character varying(36),
    event_json text,
    deadline timestamp with time zone,
    opened_by character varying(64) NOT NULL,
    opened_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    escalated_at timestamp with time zone
);

CREATE TABLE public.ops_rule_cursors (
    channel character varying(200) NOT NULL,
    epoch character varying(64) NOT NULL,
    "offset" bigint NOT NULL
);

CREATE TABLE public.outbox (
    seq integer NOT NULL,
    event_id character varying(32) NOT NULL,
    channel character varying(200) NOT NULL,
    type character varying(64) NOT NULL,
    data text NOT NULL,
    source text NOT NULL,
    ref character varying(300),
    created_at timestamp with time zone NOT NULL,
    published_at timestamp with time zone,
    epoch character varying(64),
    "offset" bigint,
    attempts integer NOT NULL,
    last_error text,
    given_up_at timestamp with time zone
);

CREATE SEQUENCE public.outbox_seq_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.outbox_seq_seq OWNED BY public.outbox.seq;

CREATE TABLE public.principals (
    id character varying(64) NOT NULL,
    agency_id character varying(64) NOT NULL,
    name character varying(200) NOT NULL,
    role character varying(16) NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE public.run_leases (
    run_id character varying(36) NOT NULL,
    holder character varying(200),
    expires_at timestamp with time zone NOT NULL
);

CREATE TABLE public.runs (
    id character varying(36) NOT NULL,
    dataset_id character varying(64) NOT NULL,
    trigger character varying(32) NOT NULL,
    status character varying(16) NOT NULL,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone,
    rows_read bigint NOT NULL,
    rows_written bigint NOT NULL,
    bytes_written bigint NOT NULL,
    version integer,
    error text,
    details_json text
);

CREATE TABLE public.source_profiles (
    agency_id character varying(64) NOT NULL,
    name character varying(64) NOT NULL,
    kind character varying(16) NOT NULL,
    settings_json text NOT NULL,
    secrets_json text NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE public.source_roots (
    agency_id character varying(64) NOT NULL,
    name character varying(64) NOT NULL,
    location text NOT NULL,
    settings_json text NOT NULL,
    secrets_json text NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE public.tokens (
    id character varying(32) NOT NULL,
    principal_id character varying(64) NOT NULL,
    secret_sha256 character varying(64) NOT NULL,
    label character varying(200) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone,
    revoked_at timestamp with time zone
);

CREATE TABLE public.versions (
    dataset_id character varying(64) NOT NULL,
    version integer NOT NULL,
    snapshot_id bigint NOT NULL,
    metadata_location text NOT NULL,
    rows_added bigint NOT NULL,
    total_rows bigint NOT NULL,
    run_id character varying(36),
    cursor_json text,
    committed_at timestamp with time zone NOT NULL
);

ALTER TABLE ONLY public.audit_head ALTER COLUMN id SET DEFAULT nextval('public.audit_head_id_seq'::regclass);

ALTER TABLE ONLY public.audit_log ALTER COLUMN seq SET DEFAULT nextval('public.audit_log_seq_seq'::regclass);

ALTER TABLE ONLY public.ops_order_events ALTER COLUMN id SET DEFAULT nextval('public.ops_order_events_id_seq'::regclass);

ALTER TABLE ONLY public.outbox ALTER COLUMN seq SET DEFAULT nextval('public.outbox_seq_seq'::regclass);

COPY public.agencies (id, name, created_at) FROM stdin;
gy_12345	贵阳市12345政务服务便民热线	2026-12-07 00:59:19.667582+00
\.

COPY public.audit_datasets (seq, dataset_id, agency_id) FROM stdin;
\.

COPY public.audit_head (id, seq, hash, updated_at, key_id, mac) FROM stdin;
1	3	0f621e2e2b17ae5f497f889e145515d840fb807febbd0f68767d8b6a10e8fe31	2026-12-07 00:59:20.286265+00	8966c2c96ef1ea5b	19ae611bc4ba5e76c97586db43ec6657643bb43cbf3d935f5a5eea95a3dcd87b
\.

COPY public.audit_log (seq, at, action, principal_id, agency_id, datasets_json, columns_json, row_count, sql_fingerprint, outcome, detail_json, prev_hash, hash, owners_json, binds_json, key_id) FROM stdin;
1	2026-12-07T00:59:19.666630+00:00	agency.add	system		{}	{}	\N	\N	ok	{"agency": "gy_12345", "name": "贵阳市12345政务服务便民热线"}	0000000000000000000000000000000000000000000000000000000000000000	2b01fbd7865983efc938ad4ad2ea97e95172ed98708a9b4c9e12223bc1d197c6	{}	[["agencies", "gy_12345", "7c2c9331997570ec28d8f4a0940e8741d6baec7c4db2320a0d65a7dae315a986"]]	8966c2c96ef1ea5b
2	2026-12-07T00:59:20.054488+00:00	principal.add	system		{}	{}	\N	\N	ok	{"agency": "gy_12345", "name": "王敏", "role": "steward", "subject": "wangmin"}	2b01fbd7865983efc938ad4ad2ea97e95172ed98708a9b4c9e12223bc1d197c6	e9395ccd6ea12880ebaa8df1000bab03e5ac8a65dc510942127205cefbd08978	{}	[["principals", "wangmin", "721746ac7d12c49594e1d7b055a4a7c2288809ba1ff436d41a38f8078d6379e2"]]	8966c2c96ef1ea5b
3	2026-12-07T00:59:20.239570+00:00	token.issue	system		{}	{}	\N	\N	ok	{"expires_at": "2036-12-04T00:59:20.212606+00:00", "label": "", "subject": "wangmin", "token": "9f5d382cb185ffdc"}	e9395ccd6ea12880ebaa8df1000bab03e5ac8a65dc510942127205cefbd08978	0f621e2e2b17ae5f497f889e145515d840fb807febbd0f68767d8b6a10e8fe31	{}	[["tokens", "9f5d382cb185ffdc", "72a802cdb39979e99f638aab1e3faca15c3bab34f089c09e3a03730e741a8e03"]]	8966c2c96ef1ea5b
\.

COPY public.datasets (id, agency_id, title, sharing, classification, manifest_json, registered_at, updated_at) FROM stdin;
\.

COPY public.grants (id, dataset_id, agency_id, requested_by, purpose, columns_json, row_filter_json, unmask_json, expires_at, status, requested_at, due_at, decided_at, decided_by, reason, changed_at) FROM stdin;
\.

COPY public.ops_alerts (id, rule_id, key, open_key, status, severity, title, source, detail_json, count, opened_at, last_seen_at, acked_by, acked_at, resolved_by, resolved_at, note) FROM stdin;
\.

COPY public.ops_order_events (id, order_id, action, actor, at, status, note, data_json) FROM stdin;
\.

COPY public.ops_orders (id, target, status, priority, instructions, alert_id, event_json, deadline, opened_by, opened_at, updated_at, escalated_at) FROM stdin;
\.

COPY public.ops_rule_cursors (channel, epoch, "offset") FROM stdin;
\.

COPY public.outbox (seq, event_id, channel, type, data, source, ref, created_at, published_at, epoch, "offset", attempts, last_error, given_up_at) FROM stdin;
\.

COPY public.principals (id, agency_id, name, role, created_at) FROM stdin;
wangmin	gy_12345	王敏	steward	2026-12-07 00:59:20.055505+00
\.

COPY public.run_leases (run_id, holder, expires_at) FROM stdin;
\.

COPY public.runs (id, dataset_id, trigger, status, started_at, finished_at, rows_read, rows_written, bytes_written, version, error, details_json) FROM stdin;
\.

COPY public.source_profiles (agency_id, name, kind, settings_json, secrets_json, created_at) FROM stdin;
\.

COPY public.source_roots (agency_id, name, location, settings_json, secrets_json, created_at) FROM stdin;
\.

COPY public.tokens (id, principal_id, secret_sha256, label, created_at, expires_at, revoked_at) FROM stdin;
9f5d382cb185ffdc	wangmin	3a873e14995ba57cb8ab1a702dc9eec6443ebbcda3ea6654179898c9819eed95		2026-12-07 00:59:20.240546+00	2036-12-04 00:59:20.212606+00	\N
\.

COPY public.versions (dataset_id, version, snapshot_id, metadata_location, rows_added, total_rows, run_id, cursor_json, committed_at) FROM stdin;
\.

SELECT pg_catalog.setval('public.audit_head_id_seq', 1, false);

SELECT pg_catalog.setval('public.audit_log_seq_seq', 1, false);

SELECT pg_catalog.setval('public.ops_order_events_id_seq', 1, false);

SELECT pg_catalog.setval('public.outbox_seq_seq', 1, false);

ALTER TABLE ONLY public.agencies
    ADD CONSTRAINT agencies_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.audit_datasets
    ADD CONSTRAINT audit_datasets_pkey PRIMARY KEY (seq, dataset_id);

ALTER TABLE ONLY public.audit_head
    ADD CONSTRAINT audit_head_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (seq);

ALTER TABLE ONLY public.datasets
    ADD CONSTRAINT datasets_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.grants
    ADD CONSTRAINT grants_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.ops_alerts
    ADD CONSTRAINT ops_alerts_open_key_key UNIQUE (open_key);

ALTER TABLE ONLY public.ops_alerts
    ADD CONSTRAINT ops_alerts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.ops_order_events
    ADD CONSTRAINT ops_order_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.ops_orders
    ADD CONSTRAINT ops_orders_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.ops_rule_cursors
    ADD CONSTRAINT ops_rule_cursors_pkey PRIMARY KEY (channel);

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_event_id_key UNIQUE (event_id);

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (seq);

ALTER TABLE ONLY public.principals
    ADD CONSTRAINT principals_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.run_leases
    ADD CONSTRAINT run_leases_pkey PRIMARY KEY (run_id);

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.source_profiles
    ADD CONSTRAINT source_profiles_pkey PRIMARY KEY (agency_id, name);

ALTER TABLE ONLY public.source_roots
    ADD CONSTRAINT source_roots_pkey PRIMARY KEY (agency_id, name);

ALTER TABLE ONLY public.tokens
    ADD CONSTRAINT tokens_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.versions
    ADD CONSTRAINT versions_pkey PRIMARY KEY (dataset_id, version);

CREATE INDEX ix_audit_datasets_agency_id ON public.audit_datasets USING btree (agency_id);

CREATE INDEX ix_audit_log_principal_id ON public.audit_log USING btree (principal_id);

CREATE INDEX ix_datasets_agency_id ON public.datasets USING btree (agency_id);

CREATE INDEX ix_grants_agency_id ON public.grants USING btree (agency_id);

CREATE INDEX ix_grants_dataset_id ON public.grants USING btree (dataset_id);

CREATE INDEX ix_ops_alerts_rule_id ON public.ops_alerts USING btree (rule_id);

CREATE INDEX ix_ops_alerts_status ON public.ops_alerts USING btree (status);

CREATE INDEX ix_ops_order_events_order_id ON public.ops_order_events USING btree (order_id);

CREATE INDEX ix_ops_orders_status ON public.ops_orders USING btree (status);

CREATE INDEX ix_ops_orders_target ON public.ops_orders USING btree (target);

CREATE INDEX ix_outbox_pending ON public.outbox USING btree (published_at, given_up_at, seq);

CREATE INDEX ix_outbox_ref ON public.outbox USING btree (ref);

CREATE INDEX ix_runs_dataset_id ON public.runs USING btree (dataset_id);

CREATE INDEX ix_tokens_principal_id ON public.tokens USING btree (principal_id);

ALTER TABLE ONLY public.audit_datasets
    ADD CONSTRAINT audit_datasets_seq_fkey FOREIGN KEY (seq) REFERENCES public.audit_log(seq);

ALTER TABLE ONLY public.datasets
    ADD CONSTRAINT datasets_agency_id_fkey FOREIGN KEY (agency_id) REFERENCES public.agencies(id);

ALTER TABLE ONLY public.grants
    ADD CONSTRAINT grants_agency_id_fkey FOREIGN KEY (agency_id) REFERENCES public.agencies(id);

ALTER TABLE ONLY public.grants
    ADD CONSTRAINT grants_dataset_id_fkey FOREIGN KEY (dataset_id) REFERENCES public.datasets(id);

ALTER TABLE ONLY public.grants
    ADD CONSTRAINT grants_requested_by_fkey FOREIGN KEY (requested_by) REFERENCES public.principals(id);

ALTER TABLE ONLY public.principals
    ADD CONSTRAINT principals_agency_id_fkey FOREIGN KEY (agency_id) REFERENCES public.agencies(id);

ALTER TABLE ONLY public.run_leases
    ADD CONSTRAINT run_leases_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id);

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_dataset_id_fkey FOREIGN KEY (dataset_id) REFERENCES public.datasets(id);

ALTER TABLE ONLY public.tokens
    ADD CONSTRAINT tokens_principal_id_fkey FOREIGN KEY (principal_id) REFERENCES public.principals(id);

ALTER TABLE ONLY public.versions
    ADD CONSTRAINT versions_dataset_id_fkey FOREIGN KEY (dataset_id) REFERENCES public.datasets(id);

