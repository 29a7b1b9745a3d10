package postgres

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// The legal log (events, event_addrs) is partitioned by calendar month (UTC) of the events'
// time reference. There is no default partition: a month's partitions are created before
// the first event of that month is written (ensureMonths, in a short transaction of its
// own), and at Open for this month and the next two. Retention (pec-spec §6.4: 30 months)
// drops whole months (DropExpiredLog) instead of deleting rows, which the triggers refuse.

// partitionLock is the advisory lock key under which partitions are created ("pec" + 2).
const partitionLock = 0x70656302

var partName = regexp.MustCompile(`^events_y(\d{4})m(\d{2})$`)

func partitionSuffix(m time.Time) string { return fmt.Sprintf("y%04dm%02d", m.Year(), int(m.Month())) }

// loadPartitions fills the cache with the months that have partitions already.
func (s *Store) loadPartitions(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'events'::regclass`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return err
		}
		if m := partName.FindStringSubmatch(name); m != nil {
			t, err := time.Parse("2006-01", m[1]+"-"+m[2])
			if err == nil {
				s.parts.Store(t.UnixNano(), true)
			}
		}
	}
	return rows.Err()
}

// ensureMonths creates the partitions of the months of the given times that do not exist yet.
func (s *Store) ensureMonths(ctx context.Context, times []int64) error {
	var missing []time.Time
	for _, t := range times {
		m := month(t)
		if _, ok := s.parts.Load(m.UnixNano()); ok {
			continue
		}
		dup := false
		for _, x := range missing {
			dup = dup || x.Equal(m)
		}
		if !dup {
			missing = append(missing, m)
		}
	}
	for _, m := range missing {
		if err := s.createMonth(ctx, m); err != nil {
			return fmt.Errorf("creating the log partition of %s: %w", m.Format("2006-01"), err)
		}
		s.parts.Store(m.UnixNano(), true)
	}
	return nil
}

// createMonth creates the events and event_addrs partitions of month m, once across every
// process and node (advisory lock, IF NOT EXISTS). TRUNCATE of a partition is refused as
// on the parents (statement triggers are not inherited by partitions).
func (s *Store) createMonth(ctx context.Context, m time.Time) error {
	from, to := m.UnixNano(), m.AddDate(0, 1, 0).UnixNano()
	sfx := partitionSuffix(m)
	return s.inTx(ctx, func(tx txn) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, partitionLock); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('events_`+sfx+`') IS NOT NULL`).Scan(&exists); err != nil || exists {
			return err
		}
		for _, t := range []string{"events", "event_addrs"} {
			p := t + "_" + sfx
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%d) TO (%d)`, p, t, from, to)); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TRIGGER %s_no_truncate BEFORE TRUNCATE ON %s
				FOR EACH STATEMENT EXECUTE FUNCTION pec_refuse('legal log is append-only: TRUNCATE refused')`, p, p)); err != nil {
				return err
			}
		}
		return nil
	})
}

// DropExpiredLog drops the monthly partitions of the log whose whole month ended before the
// retention cutoff at now (store.RetentionCutoff: 30 months, RFC 6109 §2.3), and returns the
// months dropped (YYYY-MM). Rows are never deleted one by one: the triggers refuse it.
func (s *Store) DropExpiredLog(ctx context.Context, now time.Time) ([]string, error) {
	cutoff := store.RetentionCutoff(now)
	if err := s.loadPartitions(ctx); err != nil { // months another node created
		return nil, temporary(err)
	}
	var dropped []string
	var months []time.Time
	s.parts.Range(func(k, _ any) bool {
		months = append(months, time.Unix(0, k.(int64)).UTC())
		return true
	})
	for _, m := range months {
		if m.AddDate(0, 1, 0).After(cutoff) {
			continue
		}
		sfx := partitionSuffix(m)
		err := s.inTx(ctx, func(tx txn) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, partitionLock); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DROP TABLE IF EXISTS event_addrs_`+sfx+`, events_`+sfx)
			return err
		})
		if err != nil {
			return dropped, temporary(err)
		}
		s.parts.Delete(m.UnixNano())
		dropped = append(dropped, m.Format("2006-01"))
	}
	return dropped, nil
}
