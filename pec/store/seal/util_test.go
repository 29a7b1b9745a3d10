package seal

import (
	"encoding/hex"
	"fmt"
	"strconv"
)

func hexString(b []byte) string { return hex.EncodeToString(b) }
func itoa(n int64) string       { return strconv.FormatInt(n, 10) }
func fmtSeqs(s []int64) string {
	if len(s) == 0 {
		return "[]"
	}
	return fmt.Sprint(s)
}
