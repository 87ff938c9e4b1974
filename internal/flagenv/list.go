package flagenv

import "strings"

// List is a comma-separated list flag, such as --etcd. Spaces around items
// are dropped, and the empty string is the empty list, so that
// ROUTEGUIDE_ETCD= empties it just as --etcd= does.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set replaces the list with the items of s.
func (l *List) Set(s string) error {
	*l = nil
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}
