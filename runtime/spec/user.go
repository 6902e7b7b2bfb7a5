package spec

import (
	"bytes"
	"fmt"
	"io"
	"slices"

	"github.com/moby/sys/user"
)

// MaxUserFileSize bounds how much of the image's /etc/passwd and /etc/group
// is read: a larger file is an error, not a truncated read.
const MaxUserFileSize = 16 << 20

// ErrNoPasswdEntries is wrapped when a user named by -u or the image's USER
// is not in the image's /etc/passwd ("unable to find user NAME: no matching
// entries in passwd file", as docker says); ErrNoGroupEntries likewise for a
// group name.
var (
	ErrNoPasswdEntries = user.ErrNoPasswdEntries
	ErrNoGroupEntries  = user.ErrNoGroupEntries
)

// Identity is who the container's program runs as.
type Identity struct {
	UID, GID uint32
	// AdditionalGIDs are the supplementary groups, as docker sets them: the
	// primary GID first, then the groups that list the user by name in
	// /etc/group (only when -u names no group), then --group-add's, sorted.
	AdditionalGIDs []uint32
	// Home is the home directory of the first /etc/passwd entry with UID, or
	// "/" when there is none: runc's HOME when the environment has none.
	Home string
}

// userFiles holds the image's /etc/passwd and /etc/group; nil when absent.
type userFiles struct {
	passwd, group []byte
}

func readUserFiles(rootfs string) (userFiles, error) {
	var uf userFiles
	var err error
	if uf.passwd, err = readOptional(rootfs, "/etc/passwd"); err != nil {
		return uf, err
	}
	if uf.group, err = readOptional(rootfs, "/etc/group"); err != nil {
		return uf, err
	}
	return uf, nil
}

// readOptional reads a file that an image may lack. Absent, it is nil;
// any other failure (an I/O error of the lazy mount, say) is an error, never
// taken for absence: that would silently change who the program runs as.
func readOptional(rootfs, p string) ([]byte, error) {
	b, err := ReadFile(rootfs, p, MaxUserFileSize)
	if notExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{} // present but empty is not absent
	}
	return b, nil
}

// reader returns b as an io.Reader, or a nil interface when the file is
// absent: moby/sys/user tells the two apart.
func reader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

// resolveIdentity resolves a -u / USER spec ("", "name", "uid", "name:group",
// "uid:gid", "name:gid", "uid:group") against the image's files as docker's
// daemon does with moby/sys/user, then adds --group-add's groups (names or
// numbers) and HOME as runc finds it.
func resolveIdentity(uf userFiles, spec string, groupAdd []string) (Identity, error) {
	eu, err := user.GetExecUser(spec, nil, reader(uf.passwd), reader(uf.group))
	if err != nil {
		return Identity{}, err
	}
	id := Identity{UID: uint32(eu.Uid), GID: uint32(eu.Gid)}
	id.AdditionalGIDs = append(id.AdditionalGIDs, id.GID)
	for _, g := range eu.Sgids {
		id.AdditionalGIDs = append(id.AdditionalGIDs, uint32(g))
	}
	if len(groupAdd) > 0 {
		extra, err := user.GetAdditionalGroups(groupAdd, reader(uf.group))
		if err != nil {
			return Identity{}, err
		}
		slices.Sort(extra) // moby/sys/user returns them in map order
		for _, g := range extra {
			id.AdditionalGIDs = append(id.AdditionalGIDs, uint32(g))
		}
	}
	id.Home = "/"
	if uf.passwd != nil {
		users, err := user.ParsePasswdFilter(bytes.NewReader(uf.passwd), func(u user.User) bool { return u.Uid == eu.Uid })
		if err != nil {
			return Identity{}, fmt.Errorf("read /etc/passwd: %w", err)
		}
		if len(users) > 0 {
			id.Home = users[0].Home
		}
	}
	return id, nil
}
