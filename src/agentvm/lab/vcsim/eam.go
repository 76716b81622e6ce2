package main

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
)

func eamProxy(backend string) http.Handler {
	if backend == "" {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no EAM backend: start the lab's EAM emulator (agentvm lab up)", http.StatusServiceUnavailable)
		})
	}
	u, err := url.Parse(backend)
	if err != nil || u.Host == "" {
		fail(exitUsage, "--eam-backend %q is not a URL like http://127.0.0.1:PORT", backend)
	}
	if !isLoopback(u.Hostname()) {
		fail(exitUsage, "--eam-backend must be on loopback (127.0.0.1), got %q", u.Host)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		http.Error(w, "EAM backend unreachable: "+err.Error(), http.StatusBadGateway)
	}
	return p
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
