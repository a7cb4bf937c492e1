package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The machine's cores are shared by PostgreSQL, the servers and the load
// generator (or pgbench), so a cycle's cost is the CPU time all of them
// spend on it. These read that time from /proc and getrusage, where the
// harness can: the PostgreSQL of its own cluster, its own process (the load
// generator), and pgbench's.

// procCPU is a process's CPU seconds from /proc/<pid>/stat: its own, and,
// with children, those of the children it has waited for (a backend that
// exits is reaped by the postmaster).
func procCPU(pid int, children bool) (float64, int, bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
	tick := func(i int) float64 { v, _ := strconv.ParseFloat(fields[i], 64); return v / 100 }
	ppid, _ := strconv.Atoi(fields[1])
	cpu := tick(11) + tick(12)
	if children {
		cpu += tick(13) + tick(14)
	}
	return cpu, ppid, true
}

// postgresCPU is the CPU seconds used so far by the cluster whose
// postmaster is pid: the postmaster, its live processes, and those that
// have exited. 0 when pid is 0 (not the harness's own cluster).
func postgresCPU(pid int) float64 {
	if pid == 0 {
		return 0
	}
	total, _, _ := procCPU(pid, true)
	entries, _ := filepath.Glob("/proc/[0-9]*")
	for _, e := range entries {
		child, err := strconv.Atoi(filepath.Base(e))
		if err != nil || child == pid {
			continue
		}
		if cpu, ppid, ok := procCPU(child, false); ok && ppid == pid {
			total += cpu
		}
	}
	return total
}

// cpuSplit is the CPU time per cycle of each party, in microseconds.
type cpuSplit struct {
	postgres, server, client float64
}

func (c cpuSplit) known() bool { return c.postgres > 0 || c.server > 0 || c.client > 0 }

func (c cpuSplit) total() float64 { return c.postgres + c.server + c.client }
