package publisher

import (
	"fmt"
	"strings"
)

// FirstNames joins the first n of items with sep and says how many more
// there are ("web1, web2, web3 and 9,997 more"): how a line names many
// nodes (a log line, an error, a summary) without one clause per node,
// whatever the fleet's size.
func FirstNames(items []string, n int, sep string) string {
	if len(items) <= n {
		return strings.Join(items, sep)
	}
	return strings.Join(items[:n], sep) + fmt.Sprintf(" and %d more", len(items)-n)
}
