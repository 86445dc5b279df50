module github.com/csbs/csbs/compat

go 1.26.8

require github.com/opentelekomcloud/gophertelekomcloud v0.9.4-0.20241022142145-30e3307593c0

require gopkg.in/yaml.v2 v2.3.0 // indirect
