//go:build linux && cgo

package container

import (
	"fmt"

	"github.com/opencontainers/cgroups"
	devices "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Docker's default masked paths: hidden behind /dev/null or an empty
// read-only tmpfs.
var maskedPaths = []string{
	"/proc/acpi",
	"/proc/asound",
	"/proc/interrupts",
	"/proc/kcore",
	"/proc/keys",
	"/proc/latency_stats",
	"/proc/sched_debug",
	"/proc/scsi",
	"/proc/timer_list",
	"/proc/timer_stats",
	"/sys/devices/virtual/powercap",
	"/sys/firmware",
}

// Docker's default read-only paths.
var readonlyPaths = []string{
	"/proc/bus",
	"/proc/fs",
	"/proc/irq",
	"/proc/sys",
	"/proc/sysrq-trigger",
}

const cpuPeriod = 100000 // µs

// config is the libcontainer configuration of a sandbox whose overlay root
// is mounted at rootfs.
func (r *Runtime) config(spec sandbox.Spec, rootfs string) *configs.Config {
	const (
		noExecSuidDev = unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NODEV
		roBind        = unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV
	)
	tmpMB := spec.TmpMB
	if tmpMB <= 0 {
		tmpMB = sandbox.DefaultTmpMB
	}
	namespaces := configs.Namespaces{
		{Type: configs.NEWNS}, {Type: configs.NEWUTS}, {Type: configs.NEWIPC}, {Type: configs.NEWPID},
	}
	var networks []*configs.Network
	if spec.Network != sandbox.NetworkHost {
		namespaces = append(namespaces, configs.Namespace{Type: configs.NEWNET})
		// The loopback strategy brings lo up in the new namespace.
		networks = []*configs.Network{{Type: "loopback", Address: "127.0.0.1/0", Gateway: "localhost"}}
	}
	if r.cgroupNS {
		namespaces = append(namespaces, configs.Namespace{Type: configs.NEWCGROUP})
	}

	mounts := []*configs.Mount{
		{Source: "proc", Destination: "/proc", Device: "proc", Flags: noExecSuidDev},
		{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=65536k"},
		{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620"},
		{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: noExecSuidDev, Data: "mode=1777,size=65536k"},
		{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: noExecSuidDev},
		{Source: "sysfs", Destination: "/sys", Device: "sysfs", Flags: noExecSuidDev | unix.MS_RDONLY},
		{Source: "cgroup", Destination: "/sys/fs/cgroup", Device: "cgroup", Flags: noExecSuidDev | unix.MS_RDONLY},
		{Source: "tmpfs", Destination: "/tmp", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: fmt.Sprintf("mode=1777,size=%dm", tmpMB)},
	}
	mounts = append(mounts, r.launcher.mounts(r.emptyFile)...)
	rootPropagation := unix.MS_PRIVATE | unix.MS_REC
	for _, m := range spec.Mounts {
		cm := &configs.Mount{Source: m.Source, Destination: m.Target, Device: "bind", Flags: roBind}
		if m.Propagate {
			// The container's copy of the host's shared source must stay
			// linked to it: a private root would cut every copy off
			// before the bind is made, so the root becomes a slave (host
			// mounts below the sandbox's root could reach it; the host
			// makes none) and the bind itself is made a slave explicitly.
			rootPropagation = unix.MS_SLAVE | unix.MS_REC
			cm.PropagationFlags = []int{unix.MS_SLAVE | unix.MS_REC}
		}
		mounts = append(mounts, cm)
	}

	// Only the default devices (null, zero, full, random, urandom, tty and
	// a private /dev/pts) exist and may be used.
	var devs []*devices.Device
	rules := []*devices.Rule{{Type: devices.WildcardDevice, Major: devices.Wildcard, Minor: devices.Wildcard, Permissions: "rwm", Allow: false}}
	for _, d := range specconv.AllowedDevices {
		if d.Path != "" {
			devs = append(devs, d)
		}
		rules = append(rules, &d.Rule)
	}
	res := &cgroups.Resources{Devices: rules}
	r.setLimits(res, spec.Resources())

	none := []string{}
	// The init (the reaper) keeps what it needs to give the processes it
	// starts their user and an empty bounding set, where it starts them
	// (see pid1.Reaper); each process drops all of it before it runs
	// anything of its own. Without them everything is empty.
	initCaps := none
	if r.spawns() {
		initCaps = []string{"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"}
	}
	return &configs.Config{
		Rootfs:          rootfs,
		Readonlyfs:      true,
		RootPropagation: rootPropagation,
		Mounts:          mounts,
		Devices:         devs,
		Hostname:        "baton",
		Namespaces:      namespaces,
		Networks:        networks,
		Capabilities:    &configs.Capabilities{Bounding: initCaps, Effective: initCaps, Inheritable: none, Permitted: initCaps, Ambient: none},
		NoNewPrivileges: true,
		// The seccomp filter forbids keyctl before libcontainer's init
		// would create a session keyring, so none is created; processes
		// cannot use the inherited one either.
		NoNewKeyring:  true,
		MaskPaths:     maskedPaths,
		ReadonlyPaths: readonlyPaths,
		Rlimits:       []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Hard: r.nofile, Soft: r.nofile}},
		Cgroups: &cgroups.Cgroup{
			Path:      cgroupPath(r.opts.CgroupParent, spec.ID),
			Resources: res,
		},
	}
}

// setLimits writes l into res with libcontainer's conventions (0 means
// "leave alone", -1 "unlimited").
func (r *Runtime) setLimits(res *cgroups.Resources, l sandbox.Resources) {
	if l.MemoryMB > 0 {
		res.Memory = int64(l.MemoryMB) << 20
		if r.swap {
			// Memory plus swap: no swap at all.
			res.MemorySwap = res.Memory
		}
	} else {
		res.Memory = -1
		if r.swap {
			res.MemorySwap = -1
		}
	}
	res.CpuPeriod = cpuPeriod
	if l.CPUMillis > 0 {
		res.CpuQuota = cpuQuota(l.CPUMillis)
	} else {
		res.CpuQuota = -1
	}
	if l.CPUShares > 0 {
		res.CpuShares = cpuShares(l.CPUShares)
	}
	pids := l.PIDs
	if pids <= 0 {
		pids = sandbox.DefaultPIDs
	}
	n := int64(pids)
	res.PidsLimit = &n
}

// cpuQuota is the CFS quota per cpuPeriod of millis thousandths of a CPU,
// at least the 1 ms the kernel accepts.
func cpuQuota(millis int) int64 {
	return max(int64(millis)*cpuPeriod/1000, 1000)
}

// cpuShares clamps a weight to what cgroup v1's cpu.shares accepts
// (libcontainer maps it onto cpu.weight on v2).
func cpuShares(n int) uint64 {
	return uint64(min(max(n, 2), 262144))
}

func cgroupPath(parent, id string) string {
	return parent + "/" + id
}
