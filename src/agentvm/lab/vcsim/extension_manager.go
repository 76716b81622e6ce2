package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ExtensionManager

type certStore struct {
	mu sync.Mutex
	tp map[string]string // extension key -> SHA-1 thumbprint of its certificate
}

func (c *certStore) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.tp[key]
	return v, ok
}

func (c *certStore) set(key, tp string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tp[key] = tp
}

func (c *certStore) del(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tp, key)
}

var certs = &certStore{tp: map[string]string{}}

type ExtensionManager struct {
	mo.ExtensionManager
}

func (m *ExtensionManager) find(key string) int {
	for i := range m.ExtensionList {
		if m.ExtensionList[i].Key == key {
			return i
		}
	}
	return -1
}

func (m *ExtensionManager) publish() {
	list := append([]types.Extension(nil), m.ExtensionList...)
	simulator.Map.Update(m, []types.PropertyChange{{Name: "extensionList", Val: list}})
}

func notFound(what string) *soap.Fault {
	return simulator.Fault(what+" not found", &types.NotFound{})
}

func (m *ExtensionManager) RegisterExtension(req *types.RegisterExtension) soap.HasFault {
	body := new(methods.RegisterExtensionBody)
	ext := req.Extension
	if ext.Key == "" {
		body.Fault_ = simulator.Fault("extension.key is required", &types.InvalidArgument{InvalidProperty: "extension.key"})
		return body
	}
	if m.find(ext.Key) >= 0 {
		body.Fault_ = simulator.Fault(fmt.Sprintf("extension %q is already registered", ext.Key),
			&types.InvalidArgument{InvalidProperty: "extension.key"})
		return body
	}
	ext.LastHeartbeatTime = time.Now().UTC()
	m.ExtensionList = append(m.ExtensionList, ext)
	m.publish()
	body.Res = new(types.RegisterExtensionResponse)
	return body
}

func (m *ExtensionManager) UnregisterExtension(req *types.UnregisterExtension) soap.HasFault {
	body := new(methods.UnregisterExtensionBody)
	i := m.find(req.ExtensionKey)
	if i < 0 {
		body.Fault_ = notFound(fmt.Sprintf("extension %q", req.ExtensionKey))
		return body
	}
	m.ExtensionList = append(m.ExtensionList[:i:i], m.ExtensionList[i+1:]...)
	certs.del(req.ExtensionKey)
	m.publish()
	body.Res = new(types.UnregisterExtensionResponse)
	return body
}

func (m *ExtensionManager) FindExtension(req *types.FindExtension) soap.HasFault {
	body := &methods.FindExtensionBody{Res: new(types.FindExtensionResponse)}
	if i := m.find(req.ExtensionKey); i >= 0 {
		ext := m.ExtensionList[i]
		body.Res.Returnval = &ext
	}
	return body
}

func (m *ExtensionManager) UpdateExtension(req *types.UpdateExtension) soap.HasFault {
	body := new(methods.UpdateExtensionBody)
	i := m.find(req.Extension.Key)
	if i < 0 {
		body.Fault_ = notFound(fmt.Sprintf("extension %q", req.Extension.Key))
		return body
	}
	ext := req.Extension
	ext.LastHeartbeatTime = time.Now().UTC()
	m.ExtensionList[i] = ext
	m.publish()
	body.Res = new(types.UpdateExtensionResponse)
	return body
}

func (m *ExtensionManager) SetExtensionCertificate(ctx *simulator.Context, req *types.SetExtensionCertificate) soap.HasFault {
	body := new(methods.SetExtensionCertificateBody)
	if m.find(req.ExtensionKey) < 0 {
		body.Fault_ = notFound(fmt.Sprintf("extension %q", req.ExtensionKey))
		return body
	}
	// With no certificatePem the API takes the caller's TLS client certificate.
	certificatePem := req.CertificatePem
	if _, der := peerThumbprint(requestOf(ctx)); certificatePem == "" && der != nil {
		certificatePem = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	if certificatePem == "" {
		body.Fault_ = simulator.Fault("no certificatePem and no TLS client certificate", new(types.NoClientCertificate))
		return body
	}
	block, _ := pem.Decode([]byte(certificatePem))
	if block == nil {
		body.Fault_ = simulator.Fault("certificatePem is not a PEM certificate",
			&types.InvalidArgument{InvalidProperty: "certificatePem"})
		return body
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		body.Fault_ = simulator.Fault("certificatePem: "+err.Error(), &types.InvalidArgument{InvalidProperty: "certificatePem"})
		return body
	}
	certs.set(req.ExtensionKey, thumbprint(block.Bytes))
	body.Res = new(types.SetExtensionCertificateResponse)
	return body
}
