package main

import (
	"fmt"
	"sort"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// HostAutoStartManager (configManager.autoStartManager), which 0.24.2's ESX host names but does not
// serve: on a standalone host it is what starts an agent VM first and stops it last with the host (there
// is no HA to restart it).
//
// ReconfigureAutostart merges its spec into config as ESXi does: each field set in spec.defaults replaces
// that default (the others stay); each spec.powerInfo entry replaces the entry of its VM (key), and one
// with startAction and stopAction both "none" removes the VM from the sequence; VMs not named keep their
// entries. Start orders stay a sequence 1..n: an entry with startOrder k (1 or more) goes in at position
// k, the others move down; startOrder -1 is "no order", listed after the ordered ones. Every entry is
// checked before anything changes (a VM of this host; known actions and heartbeat settings), else
// InvalidArgument naming the field. config and the host's config.autoStart are told to the property
// collector. Limits: an int32 default of 0 (startDelay: 0) reads as "not set", the request carrying no
// presence for it; AutoStartPowerOn/Off are not implemented (the lab never reboots a host).

type autoStartManager struct {
	mo.HostAutoStartManager

	host types.ManagedObjectReference
}

// setupAutoStart registers the host's HostAutoStartManager under the reference its configManager names
// (one is made when it names none), with the host's config.autoStart as its config.
func setupAutoStart(host *simulator.HostSystem) {
	mgr := &autoStartManager{host: host.Self}
	simulator.Map.WithLock(host, func() {
		cm := host.ConfigManager
		if cm.AutoStartManager == nil {
			ref := types.ManagedObjectReference{Type: "HostAutoStartManager", Value: "autoStartManager-" + host.Self.Value}
			cm.AutoStartManager = &ref
			simulator.Map.Update(host, []types.PropertyChange{{Name: "configManager", Val: cm}})
		}
		mgr.Self = *cm.AutoStartManager
		if host.Config != nil {
			if host.Config.AutoStart == nil {
				host.Config.AutoStart = &types.HostAutoStartManagerConfig{}
			}
			mgr.Config = *host.Config.AutoStart
		}
	})
	simulator.Map.Put(mgr)
}

var (
	startActions = map[string]bool{"none": true, "systemDefault": true, "powerOn": true}
	stopActions  = map[string]bool{"none": true, "systemDefault": true, "powerOff": true, "guestShutdown": true,
		"suspend": true}
	heartbeats = map[string]bool{"yes": true, "no": true, "systemDefault": true}
)

func invalidArgument(property, message string) *soap.Fault {
	return simulator.Fault(message, &types.InvalidArgument{InvalidProperty: property})
}

// checkPowerInfo faults for the first entry of spec that ESXi would refuse.
func (m *autoStartManager) checkPowerInfo(spec []types.AutoStartPowerInfo) *soap.Fault {
	seen := map[types.ManagedObjectReference]bool{}
	for i, p := range spec {
		field := fmt.Sprintf("powerInfo[%d]", i)
		vm, ok := simulator.Map.Get(p.Key).(*simulator.VirtualMachine)
		if !ok || p.Key.Type != "VirtualMachine" {
			return invalidArgument(field+".key", fmt.Sprintf("%s is not a virtual machine of this host", p.Key.Value))
		}
		var onHost bool
		simulator.Map.WithLock(vm, func() { onHost = vm.Runtime.Host != nil && *vm.Runtime.Host == m.host })
		if !onHost {
			return invalidArgument(field+".key", fmt.Sprintf("%s is not a virtual machine of this host", p.Key.Value))
		}
		if seen[p.Key] {
			return invalidArgument(field+".key", fmt.Sprintf("%s is named twice", p.Key.Value))
		}
		seen[p.Key] = true
		if !startActions[p.StartAction] {
			return invalidArgument(field+".startAction", fmt.Sprintf("%q is not none, systemDefault or powerOn", p.StartAction))
		}
		if !stopActions[p.StopAction] {
			return invalidArgument(field+".stopAction",
				fmt.Sprintf("%q is not none, systemDefault, powerOff, guestShutdown or suspend", p.StopAction))
		}
		if !heartbeats[string(p.WaitForHeartbeat)] {
			return invalidArgument(field+".waitForHeartbeat", fmt.Sprintf("%q is not yes, no or systemDefault", p.WaitForHeartbeat))
		}
		if p.StartOrder < -1 || p.StartOrder == 0 {
			return invalidArgument(field+".startOrder", fmt.Sprintf("%d is not -1 (no order) or 1 or more", p.StartOrder))
		}
	}
	return nil
}

// mergeDefaults is current with each field set in spec replacing its value.
func mergeDefaults(current *types.AutoStartDefaults, spec *types.AutoStartDefaults) *types.AutoStartDefaults {
	next := types.AutoStartDefaults{}
	if current != nil {
		next = *current
	}
	if spec.Enabled != nil {
		next.Enabled = types.NewBool(*spec.Enabled)
	}
	if spec.StartDelay != 0 {
		next.StartDelay = spec.StartDelay
	}
	if spec.StopDelay != 0 {
		next.StopDelay = spec.StopDelay
	}
	if spec.WaitForHeartbeat != nil {
		next.WaitForHeartbeat = types.NewBool(*spec.WaitForHeartbeat)
	}
	if spec.StopAction != "" {
		next.StopAction = spec.StopAction
	}
	return &next
}

// mergePowerInfo is current with each entry of spec replacing its VM's (see the file's comment).
func mergePowerInfo(current, spec []types.AutoStartPowerInfo) []types.AutoStartPowerInfo {
	var ordered, unordered []types.AutoStartPowerInfo
	named := map[types.ManagedObjectReference]bool{}
	for _, p := range spec {
		named[p.Key] = true
	}
	for _, p := range current {
		if named[p.Key] {
			continue
		}
		if p.StartOrder >= 1 {
			ordered = append(ordered, p)
		} else {
			unordered = append(unordered, p)
		}
	}
	sort.SliceStable(ordered, func(i, j int) bool { return ordered[i].StartOrder < ordered[j].StartOrder })
	for _, p := range spec {
		if p.StartAction == "none" && p.StopAction == "none" {
			continue // out of the sequence
		}
		if p.StartOrder == -1 {
			unordered = append(unordered, p)
			continue
		}
		at := int(p.StartOrder) - 1
		if at > len(ordered) {
			at = len(ordered)
		}
		ordered = append(ordered[:at], append([]types.AutoStartPowerInfo{p}, ordered[at:]...)...)
	}
	out := []types.AutoStartPowerInfo{}
	for i, p := range ordered {
		p.StartOrder = int32(i + 1)
		out = append(out, p)
	}
	return append(out, unordered...)
}

func (m *autoStartManager) ReconfigureAutostart(ctx *simulator.Context, req *types.ReconfigureAutostart) soap.HasFault {
	body := new(methods.ReconfigureAutostartBody)
	if fault := m.checkPowerInfo(req.Spec.PowerInfo); fault != nil {
		body.Fault_ = fault
		return body
	}
	next := types.HostAutoStartManagerConfig{Defaults: m.Config.Defaults, PowerInfo: m.Config.PowerInfo}
	if req.Spec.Defaults != nil {
		next.Defaults = mergeDefaults(m.Config.Defaults, req.Spec.Defaults)
	}
	if len(req.Spec.PowerInfo) > 0 {
		next.PowerInfo = mergePowerInfo(m.Config.PowerInfo, req.Spec.PowerInfo)
	}
	simulator.Map.Update(m, []types.PropertyChange{{Name: "config", Val: next}})
	if host, ok := simulator.Map.Get(m.host).(*simulator.HostSystem); ok {
		ctx.WithLock(host, func() {
			copied := next
			host.Config.AutoStart = &copied
			simulator.Map.Update(host, []types.PropertyChange{{Name: "config.autoStart", Val: &copied}})
		})
	}
	body.Res = new(types.ReconfigureAutostartResponse)
	return body
}
