package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; migrations[i] brings the schema to version i+1. Never
// edit a released migration: append a new one.
var migrations = []string{
	// 1: the whole first schema.
	`
CREATE TABLE events (
	seq            INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: a sequence number is never reused
	time           INTEGER NOT NULL,                  -- time reference, Unix nanoseconds
	identificativo TEXT NOT NULL,
	kind           TEXT NOT NULL,
	sender         TEXT NOT NULL COLLATE NOCASE,
	recipients     TEXT NOT NULL,                     -- JSON [{"addr":..,"type":..}]
	subject        TEXT NOT NULL,
	message_id     TEXT NOT NULL,
	gestore        TEXT NOT NULL,
	receipt_type   TEXT NOT NULL,
	about          TEXT NOT NULL,                     -- JSON [addr]
	error          TEXT NOT NULL,
	error_detail   TEXT NOT NULL,
	virus          TEXT NOT NULL,
	queue_id       TEXT NOT NULL,
	size           INTEGER NOT NULL,
	generated      TEXT NOT NULL,                     -- JSON [message-id]
	logged_at      INTEGER NOT NULL                   -- commit time, Unix nanoseconds
);
CREATE INDEX events_time ON events(time);
CREATE INDEX events_identificativo ON events(identificativo);
CREATE INDEX events_sender_time ON events(sender, time);

-- One row per (address, event) for recipient and mailbox searches.
CREATE TABLE event_addrs (
	addr TEXT NOT NULL COLLATE NOCASE,
	seq  INTEGER NOT NULL REFERENCES events(seq),
	PRIMARY KEY (addr, seq)
) WITHOUT ROWID;

-- The legal log is append-only (RFC 6109 §2.3: kept unmodified for 30 months).
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'legal log is append-only: UPDATE refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'legal log is append-only: DELETE refused'); END;
CREATE TRIGGER event_addrs_no_update BEFORE UPDATE ON event_addrs
BEGIN SELECT RAISE(ABORT, 'legal log is append-only: UPDATE refused'); END;
CREATE TRIGGER event_addrs_no_delete BEFORE DELETE ON event_addrs
BEGIN SELECT RAISE(ABORT, 'legal log is append-only: DELETE refused'); END;

CREATE TABLE tracking (
	identificativo TEXT NOT NULL,
	recipient      TEXT NOT NULL COLLATE NOCASE,
	state          TEXT NOT NULL,
	sent_at        INTEGER NOT NULL,
	due12          INTEGER NOT NULL,
	due22          INTEGER NOT NULL,
	due24          INTEGER NOT NULL,
	taken_at       INTEGER NOT NULL DEFAULT 0,
	delivered_at   INTEGER NOT NULL DEFAULT 0,
	failed_at      INTEGER NOT NULL DEFAULT 0,
	notice12_at    INTEGER NOT NULL DEFAULT 0,
	notice24_at    INTEGER NOT NULL DEFAULT 0,
	sender         TEXT NOT NULL,
	subject        TEXT NOT NULL,
	message_id     TEXT NOT NULL,
	data           BLOB,
	PRIMARY KEY (identificativo, recipient)
);
CREATE INDEX tracking_due12 ON tracking(due12) WHERE state = 'sent';
CREATE INDEX tracking_due22 ON tracking(due22) WHERE state IN ('taken', 'notified-12h');

CREATE TABLE outbox (
	id             INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id     TEXT NOT NULL UNIQUE,
	kind           TEXT NOT NULL,
	identificativo TEXT NOT NULL,
	mail_from      TEXT NOT NULL,
	rcpts          TEXT NOT NULL, -- JSON [addr]
	raw            BLOB NOT NULL,
	created        INTEGER NOT NULL,
	state          TEXT NOT NULL,
	attempts       INTEGER NOT NULL DEFAULT 0,
	next_attempt   INTEGER NOT NULL DEFAULT 0,
	last_error     TEXT NOT NULL DEFAULT '',
	claimed_by     TEXT NOT NULL DEFAULT '',
	lease_until    INTEGER NOT NULL DEFAULT 0,
	sent_at        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox(next_attempt) WHERE state = 'pending';
CREATE INDEX outbox_state ON outbox(state, id);
-- Outbox items are never deleted (a parked item waits for the operator).
CREATE TRIGGER outbox_no_delete BEFORE DELETE ON outbox
BEGIN SELECT RAISE(ABORT, 'outbox items are never deleted'); END;

CREATE TABLE quarantine (
	id             INTEGER PRIMARY KEY AUTOINCREMENT,
	identificativo TEXT NOT NULL,
	time           INTEGER NOT NULL,
	virus          TEXT NOT NULL,
	sender         TEXT NOT NULL,
	recipients     TEXT NOT NULL, -- JSON [addr]
	queue_id       TEXT NOT NULL,
	raw            BLOB NOT NULL
);
CREATE INDEX quarantine_time ON quarantine(time);
CREATE INDEX quarantine_identificativo ON quarantine(identificativo);

CREATE TABLE seals (
	day       TEXT PRIMARY KEY,
	first_seq INTEGER NOT NULL,
	last_seq  INTEGER NOT NULL,
	count     INTEGER NOT NULL,
	hash      BLOB NOT NULL,
	prev_hash BLOB,
	signed    BLOB NOT NULL,
	token     BLOB NOT NULL,
	created   INTEGER NOT NULL
);
CREATE TRIGGER seals_no_update BEFORE UPDATE ON seals
BEGIN SELECT RAISE(ABORT, 'seals are immutable'); END;

CREATE TABLE leases (
	name  TEXT PRIMARY KEY,
	owner TEXT NOT NULL,
	until INTEGER NOT NULL
);
`,
	// 2: held steps (store.Holder).
	`
CREATE TABLE held (
	id             INTEGER PRIMARY KEY AUTOINCREMENT,
	token          TEXT UNIQUE,        -- NULL for final records
	idem_key       TEXT UNIQUE,        -- NULL: no idempotency key
	identificativo TEXT NOT NULL,
	state          TEXT NOT NULL,      -- held, released, expired, final
	created        INTEGER NOT NULL,   -- Unix nanoseconds
	expires        INTEGER NOT NULL,   -- 0 for final records
	outcome        BLOB,
	on_confirm     BLOB,               -- the batch, JSON (heldcodec.go); NULL: empty
	on_expiry      BLOB,
	released_at    INTEGER NOT NULL DEFAULT 0,
	expired_at     INTEGER NOT NULL DEFAULT 0,
	late           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX held_expires ON held(expires) WHERE state = 'held';
CREATE INDEX held_created ON held(created);
`,
	// 3: the delivery point's records (store.Deliveries).
	`
CREATE TABLE deliveries (
	mailbox    TEXT NOT NULL COLLATE NOCASE,
	message_id TEXT NOT NULL,
	owner      TEXT NOT NULL,
	until      INTEGER NOT NULL,           -- lease end while open, Unix nanoseconds
	since      INTEGER NOT NULL,           -- first claim
	done       INTEGER NOT NULL DEFAULT 0,
	outcome    TEXT NOT NULL DEFAULT '',
	done_at    INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (mailbox, message_id)
) WITHOUT ROWID;
CREATE INDEX deliveries_done_at ON deliveries(done_at) WHERE done = 1;
CREATE INDEX deliveries_until ON deliveries(until) WHERE done = 0;
`,
	// 4: the waiting held steps by identificativo (store.Transition.ProvesQueued; named Await
	// when this migration was written).
	`
CREATE INDEX held_waiting_id ON held(identificativo) WHERE state = 'held';
`,
	// 5: the outbox's message bytes in their own table. SQLite rewrites a whole row, overflow
	// pages included, on every UPDATE: the claim and the mark of a 10 MB consegna completa
	// wrote its 10 MB twice more (6 bytes written per byte of the item in all, 384 ms of CPU;
	// BenchmarkOutboxItem). The row the drainer updates is now small.
	`
CREATE TABLE outbox_raw (
	id  INTEGER PRIMARY KEY, -- outbox.id
	raw BLOB NOT NULL
);
INSERT INTO outbox_raw (id, raw) SELECT id, raw FROM outbox;
ALTER TABLE outbox DROP COLUMN raw;
CREATE TRIGGER outbox_raw_no_delete BEFORE DELETE ON outbox_raw
BEGIN SELECT RAISE(ABORT, 'outbox items are never deleted'); END;
`,
	// 6: the bytes of sent outbox items may go (store.PurgeSentOutbox); those of pending and
	// parked items still may not, nor may any outbox row.
	`
DROP TRIGGER outbox_raw_no_delete;
CREATE TRIGGER outbox_raw_no_delete BEFORE DELETE ON outbox_raw
WHEN (SELECT state FROM outbox WHERE outbox.id = OLD.id) IS NOT 'sent'
BEGIN SELECT RAISE(ABORT, 'the bytes of an outbox item not sent are never deleted'); END;
`,
}

// migrate brings the schema to the latest version inside one BEGIN IMMEDIATE transaction,
// so that processes starting together apply each migration once.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.Exec(`CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	err = tx.QueryRow(`SELECT version FROM schema_version`).Scan(&v)
	switch {
	case err == sql.ErrNoRows:
		if _, err := tx.Exec(`INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("sqlite: database schema version %d is newer than this program (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.Exec(migrations[i]); err != nil {
			return fmt.Errorf("sqlite: migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(`UPDATE schema_version SET version = ?`, i+1); err != nil {
			return err
		}
	}
	return tx.Commit()
}
