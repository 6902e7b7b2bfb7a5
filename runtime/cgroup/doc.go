// Package cgroup puts a container's processes in a control group of their
// own and limits its memory, CPU time and number of processes, on cgroup v1
// (one hierarchy per controller; a hybrid machine's empty v2 hierarchy is
// ignored) and on cgroup v2 (one unified hierarchy). It owns the layout
// detection, the group's directories under a parent cgroup ("lazyrun" by
// default), the limit files, moving processes in, killing all of them and
// removing the group. It knows nothing of containers beyond a group name.
package cgroup
