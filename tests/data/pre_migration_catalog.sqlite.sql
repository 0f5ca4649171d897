BEGIN TRANSACTION;
CREATE TABLE agencies (
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "agencies" VALUES('gy_12345','贵阳市12345政务服务便民热线','2026-12-07 00:58:53.429049');
CREATE TABLE audit_datasets (
	seq INTEGER NOT NULL, 
	dataset_id VARCHAR(64) NOT NULL, 
	agency_id VARCHAR(64) NOT NULL, 
	PRIMARY KEY (seq, dataset_id), 
	FOREIGN KEY(seq) REFERENCES audit_log (seq)
);
CREATE TABLE audit_head (
	id INTEGER NOT NULL, 
	seq INTEGER NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	updated_at DATETIME NOT NULL, 
	key_id VARCHAR(16), 
	mac VARCHAR(64), 
	PRIMARY KEY (id)
);
INSERT INTO "audit_head" VALUES(1,3,'59c7cdaf00e017655231a142048707c43d5cd063bcb4cb48944c0067ba57322e','2026-12-07 00:58:53.452508','8966c2c96ef1ea5b','67d0ed2503a9f9d68680d660d48e9ead0bebbc2dae602a40abaf71523a29bcd3');
CREATE TABLE audit_log (
	seq INTEGER NOT NULL, 
	at VARCHAR(40) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	principal_id VARCHAR(64) NOT NULL, 
	agency_id VARCHAR(64) NOT NULL, 
	datasets_json TEXT NOT NULL, 
	columns_json TEXT NOT NULL, 
	row_count BIGINT, 
	sql_fingerprint VARCHAR(64), 
	outcome VARCHAR(16) NOT NULL, 
	detail_json TEXT NOT NULL, 
	prev_hash VARCHAR(64) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	owners_json TEXT, 
	binds_json TEXT, 
	key_id VARCHAR(16), 
	PRIMARY KEY (seq)
);
INSERT INTO "audit_log" VALUES(1,'2026-12-07T00:58:53.428186+00:00','agency.add','system','','{}','{}',NULL,NULL,'ok','{"agency": "gy_12345", "name": "贵阳市12345政务服务便民热线"}','0000000000000000000000000000000000000000000000000000000000000000','9060563fbbf0ee523f34cb66096463ade07860daf4f7782767e60554610fb198','{}','[["agencies", "gy_12345", "7a204c3cb942bb1c0ba369c100aa7715bf22cf820aa6860eda9e1333b9432752"]]','8966c2c96ef1ea5b');
INSERT INTO "audit_log" VALUES(2,'2026-12-07T00:58:53.442476+00:00','principal.add','system','','{}','{}',NULL,NULL,'ok','{"agency": "gy_12345", "name": "王敏", "role": "steward", "subject": "wangmin"}','9060563fbbf0ee523f34cb66096463ade07860daf4f7782767e60554610fb198','89584841937c929407bfe2e3ae548a80282c9131be84f97526315464bfc9b0a8','{}','[["principals", "wangmin", "a73bd453a00dc1835dc0e1e3633bc5a77868db676a57ebfa9375047574d5b331"]]','8966c2c96ef1ea5b');
INSERT INTO "audit_log" VALUES(3,'2026-12-07T00:58:53.446209+00:00','token.issue','system','','{}','{}',NULL,NULL,'ok','{"expires_at": "2036-12-04T00:58:53.445243+00:00", "label": "", "subject": "wangmin", "token": "152dafbcbc092f5e"}','89584841937c929407bfe2e3ae548a80282c9131be84f97526315464bfc9b0a8','59c7cdaf00e017655231a142048707c43d5cd063bcb4cb48944c0067ba57322e','{}','[["tokens", "152dafbcbc092f5e", "bf99c18f54528def77292fec17840ee73b2090a9f3f78ddf4d96f15cb63d4861"]]','8966c2c96ef1ea5b');
CREATE TABLE datasets (
	id VARCHAR(64) NOT NULL, 
	agency_id VARCHAR(64) NOT NULL, 
	title VARCHAR(400) NOT NULL, 
	sharing VARCHAR(16) NOT NULL, 
	classification VARCHAR(16) NOT NULL, 
	manifest_json TEXT NOT NULL, 
	registered_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(agency_id) REFERENCES agencies (id)
);
CREATE TABLE grants (
	id VARCHAR(32) NOT NULL, 
	dataset_id VARCHAR(64) NOT NULL, 
	agency_id VARCHAR(64) NOT NULL, 
	requested_by VARCHAR(64) NOT NULL, 
	purpose TEXT NOT NULL, 
	columns_json TEXT, 
	row_filter_json TEXT, 
	unmask_json TEXT NOT NULL, 
	expires_at DATETIME, 
	status VARCHAR(16) NOT NULL, 
	requested_at DATETIME NOT NULL, 
	due_at DATETIME NOT NULL, 
	decided_at DATETIME, 
	decided_by VARCHAR(64), 
	reason TEXT, 
	changed_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(dataset_id) REFERENCES datasets (id), 
	FOREIGN KEY(agency_id) REFERENCES agencies (id), 
	FOREIGN KEY(requested_by) REFERENCES principals (id)
);
CREATE TABLE ops_alerts (
	id VARCHAR(36) NOT NULL, 
	rule_id VARCHAR(100) NOT NULL, 
	"key" VARCHAR(400) NOT NULL, 
	open_key VARCHAR(520), 
	status VARCHAR(16) NOT NULL, 
	severity VARCHAR(16) NOT NULL, 
	title VARCHAR(400) NOT NULL, 
	source VARCHAR(200) NOT NULL, 
	detail_json TEXT NOT NULL, 
	count INTEGER NOT NULL, 
	opened_at DATETIME NOT NULL, 
	last_seen_at DATETIME NOT NULL, 
	acked_by VARCHAR(64), 
	acked_at DATETIME, 
	resolved_by VARCHAR(64), 
	resolved_at DATETIME, 
	note TEXT, 
	PRIMARY KEY (id), 
	UNIQUE (open_key)
);
CREATE TABLE ops_order_events (
	id INTEGER NOT NULL, 
	order_id VARCHAR(36) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	actor VARCHAR(64) NOT NULL, 
	at DATETIME NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	note TEXT, 
	data_json TEXT, 
	PRIMARY KEY (id)
);
CREATE TABLE ops_orders (
	id VARCHAR(36) NOT NULL, 
	target VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	priority VARCHAR(16) NOT NULL, 
	instructions TEXT NOT NULL, 
	alert_id VARCHAR(36), 
	event_json TEXT, 
	deadline DATETIME, 
	opened_by VARCHAR(64) NOT NULL, 
	opened_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	escalated_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE TABLE ops_rule_cursors (
	channel VARCHAR(200) NOT NULL, 
	epoch VARCHAR(64) NOT NULL, 
	"offset" BIGINT NOT NULL, 
	PRIMARY KEY (channel)
);
CREATE TABLE outbox (
	seq INTEGER NOT NULL, 
	event_id VARCHAR(32) NOT NULL, 
	channel VARCHAR(200) NOT NULL, 
	type VARCHAR(64) NOT NULL, 
	data TEXT NOT NULL, 
	source TEXT NOT NULL, 
	ref VARCHAR(300), 
	created_at DATETIME NOT NULL, 
	published_at DATETIME, 
	epoch VARCHAR(64), 
	"offset" BIGINT, 
	attempts INTEGER NOT NULL, 
	last_error TEXT, 
	given_up_at DATETIME, 
	PRIMARY KEY (seq), 
	UNIQUE (event_id)
);
CREATE TABLE principals (
	id VARCHAR(64) NOT NULL, 
	agency_id VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(agency_id) REFERENCES agencies (id)
);
INSERT INTO "principals" VALUES('wangmin','gy_12345','王敏','steward','2026-12-07 00:58:53.443255');
CREATE TABLE run_leases (
	run_id VARCHAR(36) NOT NULL, 
	holder VARCHAR(200), 
	expires_at DATETIME NOT NULL, 
	PRIMARY KEY (run_id), 
	FOREIGN KEY(run_id) REFERENCES runs (id)
);
CREATE TABLE runs (
	id VARCHAR(36) NOT NULL, 
	dataset_id VARCHAR(64) NOT NULL, 
	"trigger" VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	rows_read BIGINT NOT NULL, 
	rows_written BIGINT NOT NULL, 
	bytes_written BIGINT NOT NULL, 
	version INTEGER, 
	error TEXT, 
	details_json TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(dataset_id) REFERENCES datasets (id)
);
CREATE TABLE source_profiles (
	agency_id VARCHAR(64) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	settings_json TEXT NOT NULL, 
	secrets_json TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (agency_id, name)
);
CREATE TABLE source_roots (
	agency_id VARCHAR(64) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	location TEXT NOT NULL, 
	settings_json TEXT NOT NULL, 
	secrets_json TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (agency_id, name)
);
CREATE TABLE tokens (
	id VARCHAR(32) NOT NULL, 
	principal_id VARCHAR(64) NOT NULL, 
	secret_sha256 VARCHAR(64) NOT NULL, 
	label VARCHAR(200) NOT NULL, 
	created_at DATETIME NOT NULL, 
	expires_at DATETIME, 
	revoked_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(principal_id) REFERENCES principals (id)
);
INSERT INTO "tokens" VALUES('152dafbcbc092f5e','wangmin','c6704c67c06f05e9ea9746b58015dc03012ed51069282b02f4ca3c660a1369bd','','2026-12-07 00:58:53.451212','2036-12-04 00:58:53.445243',NULL);
CREATE TABLE versions (
	dataset_id VARCHAR(64) NOT NULL, 
	version INTEGER NOT NULL, 
	snapshot_id BIGINT NOT NULL, 
	metadata_location TEXT NOT NULL, 
	rows_added BIGINT NOT NULL, 
	total_rows BIGINT NOT NULL, 
	run_id VARCHAR(36), 
	cursor_json TEXT, 
	committed_at DATETIME NOT NULL, 
	PRIMARY KEY (dataset_id, version), 
	FOREIGN KEY(dataset_id) REFERENCES datasets (id)
);
CREATE INDEX ix_datasets_agency_id ON datasets (agency_id);
CREATE INDEX ix_tokens_principal_id ON tokens (principal_id);
CREATE INDEX ix_runs_dataset_id ON runs (dataset_id);
CREATE INDEX ix_grants_agency_id ON grants (agency_id);
CREATE INDEX ix_grants_dataset_id ON grants (dataset_id);
CREATE INDEX ix_outbox_pending ON outbox (published_at, given_up_at, seq);
CREATE INDEX ix_outbox_ref ON outbox (ref);
CREATE INDEX ix_audit_log_principal_id ON audit_log (principal_id);
CREATE INDEX ix_audit_datasets_agency_id ON audit_datasets (agency_id);
CREATE INDEX ix_ops_alerts_status ON ops_alerts (status);
CREATE INDEX ix_ops_alerts_rule_id ON ops_alerts (rule_id);
CREATE INDEX ix_ops_orders_target ON ops_orders (target);
CREATE INDEX ix_ops_orders_status ON ops_orders (status);
CREATE INDEX ix_ops_order_events_order_id ON ops_order_events (order_id);
COMMIT;
