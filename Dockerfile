# The stated image: a static stated binary on an empty base, run as the
# unprivileged user stated (uid/gid 65532), with the data dir as a volume.
#
# Build it with `bash deploy/build-images.sh`: it compiles the binary
# (CGO off, -trimpath -ldflags='-s -w') and packs the files below into
# .build/, the only part of the build context that .dockerignore lets
# through. FROM scratch pulls no base image, so no registry is needed.
FROM scratch

# base.tar: /etc/passwd and /etc/group with the user stated, the host's CA
# certificates (for S3, GCS and Azure checkpoints over TLS), /tmp (1777)
# and /run/stated (65532, the socket dir a pod shares with its app).
# data-dir.tar: /var/lib/stated (65532, 0750). Tar archives carry the
# owners and modes exactly; COPY --chown would also chown the parents.
ADD .build/base.tar .build/data-dir.tar /
COPY .build/bin/stated /stated

# Defaults for one container, set as environment variables so that each
# can be changed with -e (or a pod's env) and a flag still wins over them.
# gRPC listens on every interface, for clients that publish port 7420; the
# node advertises its loopback address and Raft stays on loopback, which
# is right for a single node. A cluster (deploy/kubernetes/) passes
# --raft-addr 0.0.0.0:7421 with --advertise-raft-addr and
# --advertise-grpc-addr set to the pod's DNS name, and --node-id. The
# default node id is fixed, not the container's hostname, so a new
# container on the same volume is the same Raft node. STATED_INSECURE
# accepts gRPC on every interface without TLS or tokens (stated run refuses
# that otherwise): give --tls-cert or --token-file for a port others reach.
ENV STATED_DATA_DIR=/var/lib/stated \
    STATED_SOCKET=/run/stated/stated.sock \
    STATED_ADDR=/run/stated/stated.sock \
    STATED_GRPC_ADDR=0.0.0.0:7420 \
    STATED_ADVERTISE_GRPC_ADDR=127.0.0.1:7420 \
    STATED_RAFT_ADDR=127.0.0.1:7421 \
    STATED_NODE_ID=stated \
    STATED_INSECURE=true

USER 65532:65532
VOLUME /var/lib/stated
EXPOSE 7420 7421
ENTRYPOINT ["/stated"]
CMD ["run"]
