package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuMark samples the machine's busy CPU time and this process's own, so
// that the CPU used by other processes (another engineer's tests, say)
// during a measurement can be reported next to it.
type cpuMark struct {
	at         time.Time
	busy, self float64 // seconds
}

const clkTck = 100 // USER_HZ on Linux

func markCPU() cpuMark {
	m := cpuMark{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		// cpu user nice system idle iowait irq softirq steal ...
		for i := 1; i < len(f); i++ {
			if i == 4 || i == 5 {
				continue // idle, iowait
			}
			v, _ := strconv.ParseFloat(f[i], 64)
			m.busy += v / clkTck
		}
	}
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			// fields after ")": state(0) ... utime(11) stime(12)
			if len(f) > 12 {
				u, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				m.self = (u + st) / clkTck
			}
		}
	}
	return m
}

// othersSince is the average number of cores that other processes kept
// busy since m.
func othersSince(m cpuMark) float64 {
	n := markCPU()
	el := n.at.Sub(m.at).Seconds()
	if el <= 0 {
		return 0
	}
	v := ((n.busy - m.busy) - (n.self - m.self)) / el
	return max(0, v)
}
