package fusefs

import (
	"maps"
	"slices"
)

func sortedNames(m map[string]*node) []string {
	return slices.Sorted(maps.Keys(m))
}
