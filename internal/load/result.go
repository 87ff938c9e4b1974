package load

import (
	"encoding/json"
	"math"
	"time"
)

// Result is what a run measured. It marshals to one JSON object:
//
//	{"ok":N,"failed":N,"errors":{"Unavailable":N},"qps":F,
//	 "p50_ms":F,"p90_ms":F,"p99_ms":F,"p999_ms":F,"late":N,"unsent":N,
//	 "by_node":{"<node id>":N}}
type Result struct {
	// OK and Failed count the calls that ended with status OK and with any
	// other status.
	OK, Failed int
	// Errors counts the failed calls by gRPC code name ("Unavailable").
	Errors map[string]int
	// QPS is finished calls, OK and failed, per second of the run.
	QPS float64
	// P50, P90, P99 and P999 (p99.9) are latency percentiles of the calls
	// that succeeded (nearest rank), or 0 when none did. In an open-loop run
	// a call's latency counts from when it was due.
	P50, P90, P99, P999 time.Duration
	// Late counts the calls of an open-loop run that started more than
	// LateAfter after they were due; Unsent, those that were due before the
	// run ended and never started. Both are 0 in a closed loop.
	Late, Unsent int
	// ByNode counts the calls, OK or failed, that each node answered, from
	// the routeguide-node response header. Calls that reached no node are in
	// no entry.
	ByNode map[string]int
	// Elapsed is how long the run took. It is not part of the JSON.
	Elapsed time.Duration
}

type jsonResult struct {
	OK     int            `json:"ok"`
	Failed int            `json:"failed"`
	Errors map[string]int `json:"errors"`
	QPS    float64        `json:"qps"`
	P50    float64        `json:"p50_ms"`
	P90    float64        `json:"p90_ms"`
	P99    float64        `json:"p99_ms"`
	P999   float64        `json:"p999_ms"`
	Late   int            `json:"late"`
	Unsent int            `json:"unsent"`
	ByNode map[string]int `json:"by_node"`
}

// MarshalJSON implements json.Marshaler. Errors and by_node are objects even
// when empty; durations are milliseconds to the microsecond.
func (r Result) MarshalJSON() ([]byte, error) {
	orEmpty := func(m map[string]int) map[string]int {
		if m == nil {
			return map[string]int{}
		}
		return m
	}
	return json.Marshal(jsonResult{
		OK:     r.OK,
		Failed: r.Failed,
		Errors: orEmpty(r.Errors),
		QPS:    round3(r.QPS),
		P50:    milliseconds(r.P50),
		P90:    milliseconds(r.P90),
		P99:    milliseconds(r.P99),
		P999:   milliseconds(r.P999),
		Late:   r.Late,
		Unsent: r.Unsent,
		ByNode: orEmpty(r.ByNode),
	})
}

// UnmarshalJSON implements json.Unmarshaler, for tools that read results back.
func (r *Result) UnmarshalJSON(data []byte) error {
	var j jsonResult
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*r = Result{
		OK:     j.OK,
		Failed: j.Failed,
		Errors: j.Errors,
		QPS:    j.QPS,
		P50:    time.Duration(math.Round(j.P50 * float64(time.Millisecond))),
		P90:    time.Duration(math.Round(j.P90 * float64(time.Millisecond))),
		P99:    time.Duration(math.Round(j.P99 * float64(time.Millisecond))),
		P999:   time.Duration(math.Round(j.P999 * float64(time.Millisecond))),
		Late:   j.Late,
		Unsent: j.Unsent,
		ByNode: j.ByNode,
	}
	return nil
}

func milliseconds(d time.Duration) float64 {
	return round3(float64(d) / float64(time.Millisecond))
}

func round3(f float64) float64 {
	return math.Round(f*1000) / 1000
}
