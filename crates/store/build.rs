//! Generates the etcd v3 gRPC server traits and messages from the vendored `.proto` files.
//! Only the server side is generated: the client side is the `etcd-client` crate.

fn main() {
    let root = "proto";
    println!("cargo:rerun-if-changed={root}");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        // Methods we do not serve answer `Unimplemented`, as the gRPC spec wants.
        .generate_default_stubs(true)
        .compile_protos(
            &[
                "proto/etcd/api/authpb/auth.proto",
                "proto/etcd/api/etcdserverpb/rpc.proto",
                "proto/etcd/api/mvccpb/kv.proto",
            ],
            &[root],
        )
        .expect("compiling the vendored etcd .proto files (is protoc installed?)");
}
