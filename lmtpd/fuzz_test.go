package lmtpd

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzQueueID: the first header field of any message Postfix hands over (untrusted input)
// never panics, and a queue id found is one field of that header.
func FuzzQueueID(f *testing.F) {
	f.Add([]byte("Received: from a by mx (Postfix) with ESMTPS id 4XyZ12ab\r\n\tfor <b>; Tue\r\n\r\n"))
	f.Add([]byte("Received: id\r\n\r\n"))
	f.Add([]byte("received: x id ;\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		id := queueID(msg)
		if id != "" && (strings.ContainsAny(id, " \t\r\n") || !strings.Contains(string(msg), id)) {
			t.Fatalf("queueID = %q", id)
		}
	})
}

// FuzzParseSearch: any answer of the doveadm API is either a verdict or an error, never a
// panic; a malformed one is never read as "found".
func FuzzParseSearch(f *testing.F) {
	f.Add([]byte(`[["doveadmResponse",[{"mailbox-guid":"x","uid":"1"}],"s"]]`))
	f.Add([]byte(`[["doveadmResponse",[],"s"]]`))
	f.Add([]byte(`[["error",{"type":"exitCode","exitCode":67},"s"]]`))
	f.Add([]byte(`[[]]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		found, err := parseSearch(b)
		if err != nil && found {
			t.Fatal("found with an error")
		}
		// A second path: found only for a one-element answer whose first element is the
		// string "doveadmResponse" (however JSON escapes it) followed by a non-empty list.
		if found {
			var v [][]any
			if json.Unmarshal(b, &v) != nil || len(v) != 1 || len(v[0]) < 2 || v[0][0] != "doveadmResponse" {
				t.Fatalf("found in %q", b)
			}
			if hits, ok := v[0][1].([]any); !ok || len(hits) == 0 {
				t.Fatalf("found without hits in %q", b)
			}
		}
	})
}
