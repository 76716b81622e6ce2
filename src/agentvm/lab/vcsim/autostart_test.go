package main

import (
	"context"
	"reflect"
	"testing"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func vmRef(id string) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VirtualMachine", Value: id}
}

func entry(id string, order int32, start, stop string) types.AutoStartPowerInfo {
	return types.AutoStartPowerInfo{Key: vmRef(id), StartOrder: order, StartDelay: -1, StopDelay: -1,
		WaitForHeartbeat: "systemDefault", StartAction: start, StopAction: stop}
}

func orderOf(infos []types.AutoStartPowerInfo) map[string]int32 {
	out := map[string]int32{}
	for _, p := range infos {
		out[p.Key.Value] = p.StartOrder
	}
	return out
}

func TestMergePowerInfoInsertsRenumbersAndRemoves(t *testing.T) {
	current := []types.AutoStartPowerInfo{entry("a", 1, "powerOn", "systemDefault"),
		entry("b", 2, "powerOn", "systemDefault"), entry("u", -1, "powerOn", "systemDefault")}
	got := mergePowerInfo(current, []types.AutoStartPowerInfo{entry("c", 1, "powerOn", "powerOff")})
	if want := map[string]int32{"c": 1, "a": 2, "b": 3, "u": -1}; !reflect.DeepEqual(orderOf(got), want) {
		t.Errorf("inserting c first: %v, want %v", orderOf(got), want)
	}
	got = mergePowerInfo(got, []types.AutoStartPowerInfo{entry("a", 1, "none", "none")})
	if want := map[string]int32{"c": 1, "b": 2, "u": -1}; !reflect.DeepEqual(orderOf(got), want) {
		t.Errorf("removing a: %v, want %v", orderOf(got), want)
	}
	got = mergePowerInfo(got, []types.AutoStartPowerInfo{entry("b", 9, "powerOn", "guestShutdown")})
	if want := map[string]int32{"c": 1, "b": 2, "u": -1}; !reflect.DeepEqual(orderOf(got), want) {
		t.Errorf("moving b past the end: %v, want %v", orderOf(got), want)
	}
	if got[1].StopAction != "guestShutdown" {
		t.Errorf("b's entry was not replaced: %+v", got[1])
	}
}

func TestMergeDefaultsReplacesOnlyTheFieldsSet(t *testing.T) {
	current := &types.AutoStartDefaults{Enabled: types.NewBool(false), StartDelay: 120, StopDelay: 120,
		WaitForHeartbeat: types.NewBool(false), StopAction: "PowerOff"}
	got := mergeDefaults(current, &types.AutoStartDefaults{Enabled: types.NewBool(true), StopDelay: 30})
	want := types.AutoStartDefaults{Enabled: types.NewBool(true), StartDelay: 120, StopDelay: 30,
		WaitForHeartbeat: types.NewBool(false), StopAction: "PowerOff"}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("merged %+v, want %+v", *got, want)
	}
	if *current.Enabled {
		t.Errorf("the current defaults were written through")
	}
}

func TestReconfigureAutostartIsReadBackThroughTheCollector(t *testing.T) {
	ctx := context.Background()
	c, _, vm := servedESX(ctx, t)
	host := esxHost()
	mgr := *host.ConfigManager.AutoStartManager
	pc := property.DefaultCollector(c.Client)
	spec := types.HostAutoStartManagerConfig{
		Defaults:  &types.AutoStartDefaults{Enabled: types.NewBool(true), StartDelay: 10},
		PowerInfo: []types.AutoStartPowerInfo{entry(vm.Reference().Value, 1, "powerOn", "systemDefault")},
	}
	if _, err := methods.ReconfigureAutostart(ctx, c.Client, &types.ReconfigureAutostart{This: mgr, Spec: spec}); err != nil {
		t.Fatalf("ReconfigureAutostart: %v", err)
	}
	var m mo.HostAutoStartManager
	if err := pc.RetrieveOne(ctx, mgr, []string{"config"}, &m); err != nil {
		t.Fatal(err)
	}
	got := m.Config
	if got.Defaults == nil || !*got.Defaults.Enabled || got.Defaults.StartDelay != 10 || got.Defaults.StopDelay != 120 {
		t.Errorf("defaults told %+v, want enabled, start delay 10, the stop delay kept (120)", got.Defaults)
	}
	if len(got.PowerInfo) != 1 || got.PowerInfo[0].Key != vm.Reference() || got.PowerInfo[0].StartOrder != 1 {
		t.Errorf("power info told %+v, want the VM first", got.PowerInfo)
	}
	var h mo.HostSystem
	if err := pc.RetrieveOne(ctx, host.Self, []string{"config.autoStart"}, &h); err != nil {
		t.Fatal(err)
	}
	if h.Config == nil || h.Config.AutoStart == nil || len(h.Config.AutoStart.PowerInfo) != 1 {
		t.Errorf("the host's config.autoStart is not the manager's: %+v", h.Config)
	}
	bad := types.HostAutoStartManagerConfig{PowerInfo: []types.AutoStartPowerInfo{entry("vm-404", 1, "powerOn", "none")}}
	_, err := methods.ReconfigureAutostart(ctx, c.Client, &types.ReconfigureAutostart{This: mgr, Spec: bad})
	if fault, ok := faultOf(err).(types.InvalidArgument); !ok || fault.InvalidProperty != "powerInfo[0].key" {
		t.Errorf("an unknown VM: %v, want InvalidArgument powerInfo[0].key", err)
	}
}
