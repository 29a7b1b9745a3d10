package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// migrations are applied in order; migrations[i] brings the schema to version i+1. Never
// edit a released migration: append a new one. Times are Unix nanoseconds in bigint columns
// (0: none), as in the SQLite store, so that every time round-trips to the nanosecond (a
// timestamptz keeps microseconds). Text columns compare byte for byte (COLLATE "C"), as
// SQLite's BINARY does; address columns are compared through lower().
var migrations = []string{
	// 1: the whole first schema.
	`
-- pec_now is the database's clock in Unix nanoseconds (now(): the transaction's start, in
-- microseconds). Leases and due outbox items are decided by it (store.Store.TryLease).
CREATE FUNCTION pec_now() RETURNS bigint LANGUAGE sql STABLE
	AS $$ SELECT (extract(epoch FROM now()) * 1000000)::bigint * 1000 $$;

-- pec_refuse aborts the statement with the message of its trigger: the legal log and the
-- seals are append-only (RFC 6109 §2.3, pec-spec §6.4: kept unmodified for 30 months).
CREATE FUNCTION pec_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END $$;

-- The legal log, partitioned by month of its time reference (partitions.go): retention drops
-- whole months, and a search over a time range reads only its months.
CREATE TABLE events (
	seq            bigint NOT NULL,     -- from log_seq, in commit order (commit.go)
	time           bigint NOT NULL,     -- time reference, Unix nanoseconds
	identificativo text COLLATE "C" NOT NULL,
	kind           text COLLATE "C" NOT NULL,
	sender         text COLLATE "C" NOT NULL,
	recipients     text NOT NULL,       -- JSON [{"addr":..,"type":..}]
	subject        text COLLATE "C" NOT NULL,
	message_id     text NOT NULL,
	gestore        text NOT NULL,
	receipt_type   text NOT NULL,
	about          text NOT NULL,       -- JSON [addr]
	error          text NOT NULL,
	error_detail   text NOT NULL,
	virus          text NOT NULL,
	queue_id       text NOT NULL,
	size           bigint NOT NULL,
	generated      text NOT NULL,       -- JSON [message-id]
	logged_at      bigint NOT NULL,     -- commit time, Unix nanoseconds
	PRIMARY KEY (seq, time)
) PARTITION BY RANGE (time);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_identificativo ON events (identificativo);
CREATE INDEX events_sender_time ON events (lower(sender), time);

-- One row per (address, event) for recipient and mailbox searches, partitioned as events.
CREATE TABLE event_addrs (
	addr text COLLATE "C" NOT NULL,    -- lower-cased (store.Event.Addresses)
	time bigint NOT NULL,
	seq  bigint NOT NULL,
	PRIMARY KEY (addr, time, seq)
) PARTITION BY RANGE (time);

-- The last sequence number given to an event. Its row lock, taken by the last statement of
-- a writing transaction, orders the log: sequence numbers are given in commit order, never
-- reused, without gaps.
CREATE TABLE log_seq (one boolean PRIMARY KEY DEFAULT true CHECK (one), last bigint NOT NULL);
INSERT INTO log_seq (last) VALUES (0);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
	FOR EACH ROW EXECUTE FUNCTION pec_refuse('legal log is append-only: UPDATE refused');
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
	FOR EACH ROW EXECUTE FUNCTION pec_refuse('legal log is append-only: DELETE refused');
CREATE TRIGGER event_addrs_no_update BEFORE UPDATE ON event_addrs
	FOR EACH ROW EXECUTE FUNCTION pec_refuse('legal log is append-only: UPDATE refused');
CREATE TRIGGER event_addrs_no_delete BEFORE DELETE ON event_addrs
	FOR EACH ROW EXECUTE FUNCTION pec_refuse('legal log is append-only: DELETE refused');
CREATE TRIGGER log_seq_forward BEFORE UPDATE ON log_seq FOR EACH ROW WHEN (NEW.last < OLD.last)
	EXECUTE FUNCTION pec_refuse('legal log is append-only: sequence numbers never go back, UPDATE refused');
CREATE TRIGGER log_seq_no_delete BEFORE DELETE OR TRUNCATE ON log_seq
	FOR EACH STATEMENT EXECUTE FUNCTION pec_refuse('legal log is append-only: DELETE refused');

CREATE TABLE tracking (
	identificativo text COLLATE "C" NOT NULL,
	recipient      text COLLATE "C" NOT NULL,
	state          text NOT NULL,
	sent_at        bigint NOT NULL,
	due12          bigint NOT NULL,
	due22          bigint NOT NULL,
	due24          bigint NOT NULL,
	taken_at       bigint NOT NULL DEFAULT 0,
	delivered_at   bigint NOT NULL DEFAULT 0,
	failed_at      bigint NOT NULL DEFAULT 0,
	notice12_at    bigint NOT NULL DEFAULT 0,
	notice24_at    bigint NOT NULL DEFAULT 0,
	sender         text NOT NULL,
	subject        text NOT NULL,
	message_id     text NOT NULL,
	data           bytea
);
-- The recipient is compared ignoring case, as SQLite's COLLATE NOCASE.
CREATE UNIQUE INDEX tracking_key ON tracking (identificativo, lower(recipient));
CREATE INDEX tracking_due12 ON tracking (due12) WHERE state = 'sent';
CREATE INDEX tracking_due22 ON tracking (due22) WHERE state IN ('taken', 'notified-12h');

CREATE TABLE outbox (
	id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	message_id     text COLLATE "C" NOT NULL UNIQUE,
	kind           text NOT NULL,
	identificativo text NOT NULL,
	mail_from      text NOT NULL,
	rcpts          text NOT NULL, -- JSON [addr]
	raw            bytea NOT NULL,
	created        bigint NOT NULL,
	state          text NOT NULL,
	attempts       integer NOT NULL DEFAULT 0,
	next_attempt   bigint NOT NULL DEFAULT 0,
	last_error     text NOT NULL DEFAULT '',
	claimed_by     text COLLATE "C" NOT NULL DEFAULT '',
	lease_until    bigint NOT NULL DEFAULT 0,
	sent_at        bigint NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
CREATE INDEX outbox_state ON outbox (state, id);
-- Outbox items are never deleted (a parked item waits for the operator).
CREATE TRIGGER outbox_no_delete BEFORE DELETE ON outbox
	FOR EACH ROW EXECUTE FUNCTION pec_refuse('outbox items are never deleted');
CREATE TRIGGER outbox_no_truncate BEFORE TRUNCATE ON outbox
	FOR EACH STATEMENT EXECUTE FUNCTION pec_refuse('outbox items are never deleted');

CREATE TABLE quarantine (
	id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	identificativo text COLLATE "C" NOT NULL,
	time           bigint NOT NULL,
	virus          text NOT NULL,
	sender         text NOT NULL,
	recipients     text NOT NULL, -- JSON [addr]
	queue_id       text NOT NULL,
	raw            bytea NOT NULL
);
CREATE INDEX quarantine_time ON quarantine (time);
CREATE INDEX quarantine_identificativo ON quarantine (identificativo);

CREATE TABLE seals (
	day       text COLLATE "C" PRIMARY KEY,
	first_seq bigint NOT NULL,
	last_seq  bigint NOT NULL,
	count     bigint NOT NULL,
	hash      bytea NOT NULL,
	prev_hash bytea,
	signed    bytea NOT NULL,
	token     bytea NOT NULL,
	created   bigint NOT NULL
);
-- A seal is written once and kept (pec-spec §6.4): no UPDATE, no DELETE, no TRUNCATE.
CREATE TRIGGER seals_no_update BEFORE UPDATE ON seals
	FOR EACH ROW EXECUTE FUNCTION pec_refuse('seals are immutable');
CREATE TRIGGER seals_no_delete BEFORE DELETE ON seals
	FOR EACH ROW EXECUTE FUNCTION pec_refuse('seals are immutable');
CREATE TRIGGER seals_no_truncate BEFORE TRUNCATE ON seals
	FOR EACH STATEMENT EXECUTE FUNCTION pec_refuse('seals are immutable');

CREATE TABLE leases (
	name  text COLLATE "C" PRIMARY KEY,
	owner text COLLATE "C" NOT NULL,
	until bigint NOT NULL
);

CREATE TABLE held (
	id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	token          text COLLATE "C" UNIQUE, -- NULL for final records
	idem_key       text COLLATE "C" UNIQUE, -- NULL: no idempotency key
	identificativo text NOT NULL,
	state          text NOT NULL,           -- held, released, expired, final
	created        bigint NOT NULL,
	expires        bigint NOT NULL,         -- 0 for final records
	outcome        bytea,
	on_confirm     bytea,                   -- the batch (package heldcodec); NULL: empty
	on_expiry      bytea,
	released_at    bigint NOT NULL DEFAULT 0,
	expired_at     bigint NOT NULL DEFAULT 0,
	late           boolean NOT NULL DEFAULT false
);
CREATE INDEX held_expires ON held (expires, id) WHERE state = 'held';
CREATE INDEX held_created ON held (created);

-- The delivery point's records (store.Deliveries): one copy per mailbox.
CREATE TABLE deliveries (
	mailbox    text COLLATE "C" NOT NULL,  -- store.NormMailbox
	message_id text COLLATE "C" NOT NULL,
	owner      text COLLATE "C" NOT NULL,
	until      bigint NOT NULL,            -- lease end while open, Unix nanoseconds
	since      bigint NOT NULL,            -- first claim
	done       boolean NOT NULL DEFAULT false,
	outcome    text NOT NULL DEFAULT '',
	done_at    bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (mailbox, message_id)
);
CREATE INDEX deliveries_done_at ON deliveries (done_at) WHERE done;
CREATE INDEX deliveries_until ON deliveries (until) WHERE NOT done;
`,
	// 2: the waiting held steps by identificativo (store.Transition.Await).
	`
CREATE INDEX held_waiting_id ON held (identificativo) WHERE state = 'held';
`,
	// 3: the bytes of sent outbox items may go (store.PurgeSentOutbox: raw set to empty);
	// those of pending and parked items may not. The index holds only the sent items whose
	// bytes are still there, so a daily purge does not read the ones purged before.
	`
CREATE INDEX outbox_sent_raw ON outbox (sent_at) WHERE state = 'sent' AND raw <> ''::bytea;
CREATE TRIGGER outbox_raw_kept BEFORE UPDATE OF raw ON outbox
	FOR EACH ROW WHEN (OLD.state <> 'sent')
	EXECUTE FUNCTION pec_refuse('the bytes of an outbox item not sent are never changed');
`,
}

// migrateLock is the advisory lock key under which migrations run ("pec" + 1), so that
// processes starting together apply each migration once.
const migrateLock = 0x70656301

// migrate brings the schema (the first of the connection's search_path) to the latest
// version in one transaction: PostgreSQL's DDL is transactional, so a failed migration
// leaves the previous version whole.
func migrate(ctx context.Context, db beginner) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`); err != nil {
		return err
	}
	var v int
	err = tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("postgres: database schema version %d is newer than this program (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.Exec(ctx, migrations[i]); err != nil {
			return fmt.Errorf("postgres: migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, i+1); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// month returns the first instant (UTC) of the month of the Unix-nanosecond time t.
func month(t int64) time.Time {
	u := time.Unix(0, t).UTC()
	return time.Date(u.Year(), u.Month(), 1, 0, 0, 0, 0, time.UTC)
}
