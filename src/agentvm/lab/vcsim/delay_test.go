package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestMethodDelayReadsMethodMillisecondPairs(t *testing.T) {
	for text, want := range map[string]map[string]int{
		"":                          {},
		"RetrievePropertiesEx:50":   {"RetrievePropertiesEx": 50},
		" A:1 , B_Task:0 ,A:3":      {"A": 3, "B_Task": 0}, // spaces allowed; the last one for a method wins
		"WaitForUpdatesEx:10,X:250": {"WaitForUpdatesEx": 10, "X": 250},
	} {
		got, err := parseMethodDelay(text)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: want %v, got %v, %v", text, want, got, err)
		}
	}
}

func TestMethodDelayRefusesWhatIsNotAPair(t *testing.T) {
	for _, text := range []string{"RetrievePropertiesEx", "RetrievePropertiesEx:", ":50", "A:-1", "A:1,,B:2", "A:ten"} {
		if got, err := parseMethodDelay(text); err == nil {
			t.Errorf("%q: want an error, got %v", text, got)
		} else if !strings.Contains(err.Error(), "--method-delay takes METHOD:MS pairs") {
			t.Errorf("%q: the error should say what the flag takes, got %v", text, err)
		}
	}
}
