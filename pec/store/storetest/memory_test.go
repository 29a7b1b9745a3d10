package storetest

import (
	"testing"

	"github.com/gestore-pec/gestore/pec/store"
)

func TestMemory(t *testing.T) {
	Run(t, func(t *testing.T) store.Store { return NewMemory() })
}
