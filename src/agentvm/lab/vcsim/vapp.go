package main

import (
	"fmt"
	"sort"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// vApp options set by ReconfigVM_Task, as ESXi keeps them: 0.24.2 ignores spec.vAppConfig (and
// spec.vAppConfigRemoved), so a VM's OVF properties cannot be written after import. In ESX mode the front
// routes ReconfigVM_Task to the VM's powerGuard (maintenance.go); the VM's own reconfigure runs first,
// and when it succeeds spec.vAppConfig is merged into config.vAppConfig: properties and products by
// key (add: a new key, else InvalidArgument; edit: the set fields of an existing key; remove: removeKey),
// ovfEnvironmentTransport and installBootRequired replaced when given; vAppConfigRemoved drops it all.
// The change is told to the property collector under config.vAppConfig before the answer leaves. The same
// route keeps an edited device in its place (keepDeviceOrder, below).

// checkVApp faults for the first operation of spec that cannot apply to current.
func checkVApp(current *types.VmConfigInfo, spec *types.VmConfigSpec) *soap.Fault {
	keys := map[int32]bool{}
	if current != nil {
		for _, p := range current.Property {
			keys[p.Key] = true
		}
	}
	for i, p := range spec.Property {
		field := fmt.Sprintf("vAppConfig.property[%d]", i)
		switch p.Operation {
		case types.ArrayUpdateOperationAdd:
			if p.Info == nil || keys[p.Info.Key] {
				return invalidArgument(field, "add needs info with a key no property has")
			}
			keys[p.Info.Key] = true
		case types.ArrayUpdateOperationEdit:
			if p.Info == nil || !keys[p.Info.Key] {
				return invalidArgument(field, "edit needs info with the key of a property")
			}
		case types.ArrayUpdateOperationRemove:
			key, ok := p.RemoveKey.(int32)
			if !ok || !keys[key] {
				return invalidArgument(field, "remove needs the removeKey of a property")
			}
			delete(keys, key)
		default:
			return invalidArgument(field+".operation", fmt.Sprintf("%q is not add, edit or remove", p.Operation))
		}
	}
	return nil
}

// editProperty is p with the fields set in edit replacing its own.
func editProperty(p types.VAppPropertyInfo, edit *types.VAppPropertyInfo) types.VAppPropertyInfo {
	for _, f := range []struct{ to, from *string }{{&p.ClassId, &edit.ClassId}, {&p.InstanceId, &edit.InstanceId},
		{&p.Id, &edit.Id}, {&p.Category, &edit.Category}, {&p.Label, &edit.Label}, {&p.Type, &edit.Type},
		{&p.TypeReference, &edit.TypeReference}, {&p.DefaultValue, &edit.DefaultValue}, {&p.Value, &edit.Value},
		{&p.Description, &edit.Description}} {
		if *f.from != "" {
			*f.to = *f.from
		}
	}
	if edit.UserConfigurable != nil {
		p.UserConfigurable = types.NewBool(*edit.UserConfigurable)
	}
	return p
}

// mergeVApp is current with spec applied (checkVApp passed).
func mergeVApp(current *types.VmConfigInfo, spec *types.VmConfigSpec) *types.VmConfigInfo {
	next := types.VmConfigInfo{}
	if current != nil {
		next = *current
	}
	props := append([]types.VAppPropertyInfo(nil), next.Property...)
	for _, p := range spec.Property {
		switch p.Operation {
		case types.ArrayUpdateOperationAdd:
			props = append(props, *p.Info)
		case types.ArrayUpdateOperationEdit:
			for i := range props {
				if props[i].Key == p.Info.Key {
					props[i] = editProperty(props[i], p.Info)
				}
			}
		case types.ArrayUpdateOperationRemove:
			kept := props[:0:0]
			for _, have := range props {
				if have.Key != p.RemoveKey.(int32) {
					kept = append(kept, have)
				}
			}
			props = kept
		}
	}
	next.Property = props
	products := append([]types.VAppProductInfo(nil), next.Product...)
	for _, p := range spec.Product {
		if p.Info == nil {
			continue
		}
		switch p.Operation {
		case types.ArrayUpdateOperationAdd:
			products = append(products, *p.Info)
		case types.ArrayUpdateOperationEdit:
			for i := range products {
				if products[i].Key == p.Info.Key {
					products[i] = *p.Info
				}
			}
		}
	}
	next.Product = products
	if spec.OvfEnvironmentTransport != nil {
		next.OvfEnvironmentTransport = append([]string(nil), spec.OvfEnvironmentTransport...)
	}
	if spec.InstallBootRequired != nil {
		next.InstallBootRequired = *spec.InstallBootRequired
	}
	if spec.IpAssignment != nil {
		next.IpAssignment = *spec.IpAssignment
	}
	return &next
}

func (g *powerGuard) ReconfigVMTask(ctx *simulator.Context, req *types.ReconfigVM_Task) soap.HasFault {
	vm, ok := simulator.Map.Get(g.vm).(*simulator.VirtualMachine)
	if !ok {
		return &methods.ReconfigVM_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: g.vm})}
	}
	req.This = g.vm
	var res soap.HasFault
	ctx.WithLock(vm, func() {
		var current *types.VmConfigInfo
		if vm.Config.VAppConfig != nil {
			current, _ = vm.Config.VAppConfig.(*types.VmConfigInfo)
		}
		spec, _ := req.Spec.VAppConfig.(*types.VmConfigSpec)
		if spec != nil {
			if fault := checkVApp(current, spec); fault != nil {
				res = &methods.ReconfigVM_TaskBody{Fault_: fault}
				return
			}
		}
		order := deviceKeys(vm)
		res = vm.ReconfigVMTask(ctx, req)
		body, ok := res.(*methods.ReconfigVM_TaskBody)
		if !ok || body.Res == nil {
			return
		}
		task, ok := simulator.Map.Get(body.Res.Returnval).(*simulator.Task)
		if !ok || task.Info.State != types.TaskInfoStateSuccess {
			return
		}
		if edits(req.Spec) {
			keepDeviceOrder(vm, order)
		}
		removed := req.Spec.VAppConfigRemoved != nil && *req.Spec.VAppConfigRemoved
		switch {
		case removed:
			vm.Config.VAppConfig = nil
			simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.vAppConfig", Val: nil}})
		case spec != nil:
			next := mergeVApp(current, spec)
			vm.Config.VAppConfig = next
			simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.vAppConfig", Val: next}})
		}
	})
	return res
}

// A device edited by ReconfigVM_Task keeps its place in config.hardware.device, as on ESXi (a NIC's position
// there is the OVF's order of networks); 0.24.2 removes the edited device and appends it at the end, so
// editing the first of two NICs swapped them. After a reconfigure with an edit, the devices that were there
// before are put back in their order, new ones after them in the order they were added.

func deviceKeys(vm *simulator.VirtualMachine) []int32 {
	if vm.Config == nil {
		return nil
	}
	keys := make([]int32, 0, len(vm.Config.Hardware.Device))
	for _, d := range vm.Config.Hardware.Device {
		keys = append(keys, d.GetVirtualDevice().Key)
	}
	return keys
}

func edits(spec types.VirtualMachineConfigSpec) bool {
	for _, change := range spec.DeviceChange {
		if change.GetVirtualDeviceConfigSpec().Operation == types.VirtualDeviceConfigSpecOperationEdit {
			return true
		}
	}
	return false
}

func keepDeviceOrder(vm *simulator.VirtualMachine, before []int32) {
	if vm.Config == nil {
		return
	}
	rank := make(map[int32]int, len(before))
	for i, key := range before {
		rank[key] = i
	}
	devices := append([]types.BaseVirtualDevice(nil), vm.Config.Hardware.Device...)
	sort.SliceStable(devices, func(i, j int) bool {
		ri, iOld := rank[devices[i].GetVirtualDevice().Key]
		rj, jOld := rank[devices[j].GetVirtualDevice().Key]
		if iOld && jOld {
			return ri < rj
		}
		return iOld && !jOld
	})
	vm.Config.Hardware.Device = devices
	simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: devices}})
}
