package storetest

import (
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

func TestMemory(t *testing.T) {
	Run(t, func(t *testing.T, now func() time.Time) DB {
		m := NewMemoryClock(now)
		first := true
		return func() store.Store {
			if first {
				first = false
				return m
			}
			return m.Handle()
		}
	})
}
