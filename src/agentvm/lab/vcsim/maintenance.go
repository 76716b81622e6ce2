package main

import (
	"bytes"
	"regexp"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// PowerOnVM_Task refused while the VM's host is in maintenance mode, as ESXi refuses it ("The operation
// is not allowed in the current state of the host": the task fails with InvalidHostState, an
// InvalidState). 0.24.2 powers the VM on. Its VirtualMachine type cannot be replaced (the simulator
// type-asserts it), so in ESX mode the front routes PowerOnVM_Task to a powerGuard per VM, registered
// under the moref type "AgentvmPowerGuard" (the DV port routing's pattern, dvports.go), which checks the
// host and otherwise lets the VM answer. ReconfigVM_Task goes the same way (vapp.go).

const powerGuardType = "AgentvmPowerGuard"

var rePowerOn = regexp.MustCompile(
	`(?s)(<(?:PowerOnVM_Task|ReconfigVM_Task)\b[^>]*>\s*<_this\b[^>]*?type=")(VirtualMachine)("[^>]*>)([^<]*)(</_this>)`)

type powerGuard struct {
	self types.ManagedObjectReference
	vm   types.ManagedObjectReference
}

func (g *powerGuard) Reference() types.ManagedObjectReference { return g.self }

// routePowerOn rewrites the _this of a PowerOnVM_Task or ReconfigVM_Task of an existing VM to its powerGuard; it returns the
// body and the routed type ("" when nothing was routed).
func routePowerOn(body []byte) ([]byte, string) {
	m := rePowerOn.FindSubmatchIndex(body)
	if m == nil {
		return body, ""
	}
	vm := types.ManagedObjectReference{Type: "VirtualMachine", Value: string(body[m[8]:m[9]])}
	if simulator.Map.Get(vm) == nil {
		return body, "" // the simulator answers ManagedObjectNotFound
	}
	self := types.ManagedObjectReference{Type: powerGuardType, Value: vm.Value}
	dvPortsMu.Lock()
	if simulator.Map.Get(self) == nil {
		simulator.Map.Put(&powerGuard{self: self, vm: vm})
	}
	dvPortsMu.Unlock()
	var b bytes.Buffer
	b.Write(body[:m[4]])
	b.WriteString(powerGuardType)
	b.Write(body[m[5]:])
	return b.Bytes(), powerGuardType
}

func (g *powerGuard) PowerOnVMTask(ctx *simulator.Context, req *types.PowerOnVM_Task) soap.HasFault {
	vm, ok := simulator.Map.Get(g.vm).(*simulator.VirtualMachine)
	if !ok {
		return &methods.PowerOnVM_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: g.vm})}
	}
	var hostRef *types.ManagedObjectReference
	ctx.WithLock(vm, func() { hostRef = vm.Runtime.Host })
	if hostRef != nil {
		if host, ok := simulator.Map.Get(*hostRef).(*simulator.HostSystem); ok {
			var inMaintenance bool
			ctx.WithLock(host, func() { inMaintenance = host.Runtime.InMaintenanceMode })
			if inMaintenance {
				ref := host.Self
				task := simulator.CreateTask(vm, "powerOn", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
					return nil, &types.InvalidHostState{Host: &ref}
				})
				taskRef := task.Run()
				simulator.Map.Update(task, []types.PropertyChange{{Name: "info.error", Val: types.LocalizedMethodFault{
					Fault:            &types.InvalidHostState{Host: &host.Self},
					LocalizedMessage: "The operation is not allowed in the current state of the host.",
				}}})
				return &methods.PowerOnVM_TaskBody{Res: &types.PowerOnVM_TaskResponse{Returnval: taskRef}}
			}
		}
	}
	req.This = g.vm
	var res soap.HasFault
	ctx.WithLock(vm, func() { res = vm.PowerOnVMTask(ctx, req) })
	return res
}
