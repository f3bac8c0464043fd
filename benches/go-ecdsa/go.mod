module berth.test/go-ecdsa

go 1.26
