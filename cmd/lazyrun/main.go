// Command lazyrun runs containers on lazily mounted images. It is not
// written yet: the read path (lazyfs) comes first.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "lazyrun: not yet: containers come with the copy-on-write issue; use 'lazyfs mount' for now")
	os.Exit(1)
}
