//! Generates the etcd v3 gRPC messages, the server traits and the client stubs from the vendored
//! `.proto` files, in pure Rust: `protox` parses them (no `protoc`, no protobuf headers), and
//! `tonic-prost-build` turns the descriptors into code. One generated copy serves both sides.

fn main() {
    let root = "proto";
    println!("cargo:rerun-if-changed={root}");
    let files = [
        "etcd/api/authpb/auth.proto",
        "etcd/api/etcdserverpb/rpc.proto",
        "etcd/api/mvccpb/kv.proto",
    ];
    let fds = match protox::compile(files, [root]) {
        Ok(fds) => fds,
        Err(e) => panic!("parsing the vendored etcd .proto files: {e:?}"),
    };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Methods we do not serve answer `Unimplemented`, as the gRPC spec wants.
        .generate_default_stubs(true)
        .skip_protoc_run()
        .compile_fds(fds)
        .expect("generating code from the etcd descriptors");
}
