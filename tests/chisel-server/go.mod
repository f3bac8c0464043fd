module berth.test/chisel-server

go 1.23.0

require (
	github.com/gorilla/websocket v1.5.3
	golang.org/x/crypto v0.41.0
)

require golang.org/x/sys v0.35.0 // indirect
