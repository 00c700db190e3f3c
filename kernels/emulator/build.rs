//! Builds the emulated CUDA device: kernels/*.cu (and selftest/*.cu) compiled as C++ with
//! BGE_HOST_EMULATION, plus the execution model, into three shared libraries under
//! $OUT_DIR/lib that stand in for the NVIDIA ones pg_bge loads: libcuda.so (driver API and every
//! kernel), libnvrtc.so and libcublas.so (both linked to libcuda.so, which holds the state).
//! Each kernel file's entry points are found by preprocessing it with BGE_EMU_LIST_KERNELS,
//! which marks every __global__ function, so a new kernel needs no list kept by hand.
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let kernels = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let lib_dir = out.join("lib");
    std::fs::create_dir_all(&lib_dir).unwrap();

    let mut sources = cu_files(&kernels);
    sources.extend(cu_files(&manifest.join("selftest")));
    let cpp = manifest.join("cpp");
    for path in sources.iter().chain([&kernels.join("bge_common.cuh"), &kernels.join("host_emulation.h")]) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-changed={}", manifest.join("selftest").display());
    println!("cargo:rerun-if-changed={}", cpp.display());

    let build = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++17")
            .pic(true)
            .define("BGE_HOST_EMULATION", None)
            .include(&kernels)
            .include(&cpp)
            .flag("-fvisibility=hidden")
            .flag("-fvisibility-inlines-hidden")
            .flag("-Wno-unknown-pragmas") // CUDA's #pragma unroll
            .flag("-Wno-unused-parameter")
            .cargo_metadata(false);
        b
    };
    let compiler = build().get_compiler();

    // One generated translation unit per kernel file: the file itself, then its table.
    let mut tables = String::from("#include \"runtime.h\"\n");
    let mut table_names = Vec::new();
    let mut generated = Vec::new();
    for src in &sources {
        let name = src.file_name().unwrap().to_str().unwrap().to_string();
        let stem = name.trim_end_matches(".cu").replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let text = std::fs::read_to_string(src).unwrap();
        let entries = kernel_names(&compiler, &kernels, src);
        assert!(!entries.is_empty(), "{name}: no __global__ function found");
        let mut tu = format!("#include \"{}\"\n#include \"runtime.h\"\nnamespace {{\nconst bge_emu::Kernel kernels[] = {{\n", src.display());
        for (e, bound) in &entries {
            tu += &format!("    {{\"{e}\", &bge_emu::thunk<&{e}>, {bound}}},\n");
        }
        tu += &format!(
            "}};\n}}  // namespace\nextern const bge_emu::KernelFile bge_emu_file_{stem} = {{\"{name}\", kernels, {}, {:#x}ull}};\n",
            entries.len(),
            fnv1a(text.as_bytes())
        );
        let path = out.join(format!("emulated_{stem}.cpp"));
        std::fs::write(&path, tu).unwrap();
        generated.push(path);
        tables += &format!("extern const bge_emu::KernelFile bge_emu_file_{stem};\n");
        table_names.push(format!("&bge_emu_file_{stem}"));
    }
    let header = std::fs::read_to_string(kernels.join("bge_common.cuh")).unwrap();
    tables += &format!(
        "const bge_emu::KernelFile* const bge_emu::kernel_files[] = {{{}, nullptr}};\nconst uint64_t bge_emu::common_header_hash = {:#x}ull;\n",
        table_names.join(", "),
        fnv1a(header.as_bytes())
    );
    let tables_path = out.join("emulated_files.cpp");
    std::fs::write(&tables_path, tables).unwrap();
    generated.push(tables_path);

    let objects = |files: &[PathBuf], kernels: bool| {
        let mut b = build();
        b.files(files);
        if kernels {
            // Indexing a fixed-size array (a __shared__ tile, a local one) out of bounds, or
            // overflowing a signed index, traps; runtime.cpp turns the trap into a failed launch.
            b.flag("-fsanitize=bounds,signed-integer-overflow").flag("-fsanitize-undefined-trap-on-error");
        }
        b.compile_intermediates()
    };
    let mut cuda = objects(&[cpp.join("runtime.cpp"), cpp.join("driver.cpp")], false);
    cuda.extend(objects(&generated, true));
    link(&compiler, &lib_dir, "libcuda.so", &cuda, false);
    link(&compiler, &lib_dir, "libnvrtc.so", &objects(&[cpp.join("nvrtc.cpp")], false), true);
    link(&compiler, &lib_dir, "libcublas.so", &objects(&[cpp.join("cublas.cpp")], false), true);

    println!("cargo:rustc-env=BGE_EMULATOR_LIB_DIR={}", lib_dir.display());
}

fn cu_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    files
}

/// The __global__ functions `src` defines, with their __launch_bounds__ (0: none), from its
/// preprocessed text: "bge_emu_kernel_entry_point void [bge_emu_launch_bounds(N)] NAME(".
fn kernel_names(compiler: &cc::Tool, include: &Path, src: &Path) -> Vec<(String, u32)> {
    let out = compiler
        .to_command()
        .args(["-E", "-P", "-x", "c++", "-DBGE_HOST_EMULATION", "-DBGE_EMU_LIST_KERNELS"])
        .arg(format!("-I{}", include.display()))
        .arg(src)
        .output()
        .expect("the C++ compiler");
    assert!(out.status.success(), "preprocessing {}: {}", src.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut kernels = Vec::new();
    for rest in text.split("bge_emu_kernel_entry_point").skip(1) {
        let mut rest = rest.trim_start().strip_prefix("void").expect("a __global__ function returns void").trim_start();
        let mut bound = 0;
        if let Some(args) = rest.strip_prefix("bge_emu_launch_bounds") {
            let (inside, after) = args.trim_start().strip_prefix('(').and_then(|a| a.split_once(')')).expect("__launch_bounds__(...)");
            let first = inside.split(',').next().unwrap().trim().trim_matches(|c| c == '(' || c == ')');
            bound = first.parse().unwrap_or_else(|_| panic!("{}: __launch_bounds__({inside}) is not a number after preprocessing", src.display()));
            rest = after.trim_start();
        }
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        kernels.push((name, bound));
    }
    kernels
}

fn link(compiler: &cc::Tool, dir: &Path, name: &str, objects: &[PathBuf], needs_driver: bool) {
    let mut cmd = compiler.to_command();
    cmd.args(["-shared", "-o"]).arg(dir.join(name)).arg(format!("-Wl,-soname,{name}")).args(objects);
    if needs_driver {
        // The driver library holds the emulator's state; $ORIGIN finds it next to this one.
        cmd.arg(format!("-L{}", dir.display())).arg("-l:libcuda.so").arg("-Wl,-rpath,$ORIGIN");
    }
    cmd.arg("-pthread");
    let status = cmd.status().expect("the C++ compiler (linking)");
    assert!(status.success(), "linking {name} failed");
}

/// FNV-1a, 64 bits: runtime.cpp's fnv1a, for the fake NVRTC's source check.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}
