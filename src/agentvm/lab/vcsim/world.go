package main

import (
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// extend gives a model built by m.Create() what the lab adds to 0.24.2's: its own about.instanceUuid
// (when instanceUUID is not ""), marked uplink port groups, our ExtensionManager, the paging root
// collector, an EsxAgentHostManager, physical NICs and a HostNetworkSystem on every host, and the
// model's switch members' config.host and proxy switches. main calls it once, before anything connects; the
// Go tests call it on their own models. It returns the agent managers, for hosts added later.
func extend(m *simulator.Model, instanceUUID string) *agentManagers {
	// A vCenter's about.instanceUuid names its installation (agentvm derives SDN ids from it); 0.24.2
	// assigns a random one to a copy of the content and serves a fixed one, so every simulator looks like
	// the same vCenter. The lab gives each world its own.
	si := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	if instanceUUID != "" {
		si.Content.About.InstanceUuid = strings.ToLower(instanceUUID)
	}
	markUplinks()

	// Replace the inert ExtensionManager with ours, under the same reference.
	em := &ExtensionManager{}
	em.Self = *m.ServiceContent.ExtensionManager
	simulator.Map.Put(em)
	if pc, ok := simulator.Map.Get(m.ServiceContent.PropertyCollector).(*simulator.PropertyCollector); ok {
		// Only the managed-object part (its reference; no filter exists yet) is carried over: copying
		// the whole collector would copy its mutex.
		paging := &pagingCollector{}
		paging.PropertyCollector.PropertyCollector = pc.PropertyCollector
		simulator.Map.Put(paging)
	}
	mgrs := &agentManagers{done: map[types.ManagedObjectReference]bool{}}
	mgrs.ensure() // also gives every host its NICs and network system (host_network.go)
	memberSwitches()
	return mgrs
}
