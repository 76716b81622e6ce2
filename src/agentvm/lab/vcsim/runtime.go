package main

import (
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// 0.24.2 changes a host's runtime (maintenance mode, connection, power) and a cluster's host list without
// telling the property collector, so WaitForUpdatesEx never reports them. A real vCenter does; this
// publishes such changes shortly after they happen.

type hostRuntime struct {
	maintenance bool
	connection  types.HostSystemConnectionState
	power       types.HostSystemPowerState
}

type runtimePublisher struct {
	seen         map[types.ManagedObjectReference]hostRuntime
	clusterHosts map[types.ManagedObjectReference]int
}

func newRuntimePublisher() *runtimePublisher {
	p := &runtimePublisher{map[types.ManagedObjectReference]hostRuntime{}, map[types.ManagedObjectReference]int{}}
	p.check() // the state before anyone can connect is the baseline
	return p
}

func (p *runtimePublisher) run(every time.Duration) {
	for range time.Tick(every) {
		p.check()
	}
}

// check publishes what changed since the last check; an object seen for the first time only sets its
// baseline (its creation was already announced).
func (p *runtimePublisher) check() {
	for _, e := range simulator.Map.All("HostSystem") {
		host, ok := e.(*simulator.HostSystem)
		if !ok {
			continue
		}
		simulator.Map.WithLock(host, func() {
			now := hostRuntime{host.Runtime.InMaintenanceMode, host.Runtime.ConnectionState, host.Runtime.PowerState}
			before, known := p.seen[host.Self]
			p.seen[host.Self] = now
			if !known || before == now {
				return
			}
			simulator.Map.Update(host, []types.PropertyChange{
				{Name: "runtime.inMaintenanceMode", Val: now.maintenance},
				{Name: "runtime.connectionState", Val: now.connection},
				{Name: "runtime.powerState", Val: now.power},
			})
		})
	}
	for _, e := range simulator.Map.All("ClusterComputeResource") {
		cluster, ok := e.(*simulator.ClusterComputeResource)
		if !ok {
			continue
		}
		simulator.Map.WithLock(cluster, func() {
			n := len(cluster.Host)
			before, known := p.clusterHosts[cluster.Self]
			p.clusterHosts[cluster.Self] = n
			if known && before != n {
				hosts := append([]types.ManagedObjectReference(nil), cluster.Host...)
				simulator.Map.Update(cluster, []types.PropertyChange{{Name: "host", Val: hosts}})
			}
		})
	}
}
