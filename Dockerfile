# Minimal image of berth. The production image (static binary on scratch,
# health check, Swarm deployment) is the subject of a later issue.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/berth /app/berth
LABEL io.portainer.agent=true
EXPOSE 9001
WORKDIR /app
ENTRYPOINT ["/app/berth"]
