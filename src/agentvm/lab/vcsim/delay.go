package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
)

// Latency injection, so that benchmarks can model a real vCenter's round trips: 0.24.2's own
// (simulator.DelayConfig, applied to every SOAP call after the model is built), set from --delay and
// --method-delay.

// parseMethodDelay reads --method-delay: comma-separated METHOD:MS pairs, e.g.
// "RetrievePropertiesEx:50,WaitForUpdatesEx:10" (methods by their SOAP names; "" is none).
func parseMethodDelay(text string) (map[string]int, error) {
	delays := map[string]int{}
	if strings.TrimSpace(text) == "" {
		return delays, nil
	}
	for _, pair := range strings.Split(text, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(pair), ":")
		ms, err := strconv.Atoi(strings.TrimSpace(value))
		name = strings.TrimSpace(name)
		if !ok || name == "" || err != nil || ms < 0 {
			return nil, fmt.Errorf("--method-delay takes METHOD:MS pairs separated by commas, like "+
				"RetrievePropertiesEx:50,WaitForUpdatesEx:10 (got %q)", pair)
		}
		delays[name] = ms
	}
	return delays, nil
}

// setDelay turns on the latency of every later SOAP call: delay ms for each, plus perMethod[name] ms.
// main calls it once the model and its workload VMs are built (they are built by SOAP calls in process).
func setDelay(m *simulator.Model, delay int, perMethod map[string]int) {
	m.DelayConfig.Delay = delay
	m.DelayConfig.MethodDelay = perMethod
}
