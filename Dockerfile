# berth's image: one statically linked binary on scratch, with the CA
# bundle for calls out (Edge polling). No shell, no docker CLI.
#
# scripts/build-image compiles the binary and stages the build context
# (target/image: the binary and the CA bundle), then builds this file with
# the engine's legacy builder; nothing is pulled from a registry.
FROM scratch
COPY berth /berth
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
LABEL io.portainer.agent="true" \
      org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="A Portainer agent in Rust"
EXPOSE 9001
HEALTHCHECK --interval=10s --timeout=10s --start-period=5s --retries=3 CMD ["/berth", "healthcheck"]
ENTRYPOINT ["/berth"]
