//! Builds `src/preprocess/jpeg.c` (the JPEG decoding shim) against mozjpeg-sys's libjpeg headers.

fn main() {
    println!("cargo:rerun-if-changed=src/preprocess/jpeg.c");
    let include = std::env::var_os("DEP_JPEG_INCLUDE").expect("mozjpeg-sys exports its include paths as DEP_JPEG_INCLUDE");
    let mut build = cc::Build::new();
    for dir in std::env::split_paths(&include) {
        build.include(dir);
    }
    build.file("src/preprocess/jpeg.c").warnings(true).compile("vitedge_jpeg");
}
