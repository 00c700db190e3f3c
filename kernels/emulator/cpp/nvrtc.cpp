// libnvrtc.so of the emulated device. The kernels were compiled when the emulator was built
// (build.rs), so "compiling" checks that the program is one of those files, with the very text
// the emulator was built from (and the same bge_common.cuh), and returns an image naming it,
// which cuModuleLoadData (driver.cpp) resolves. A source the emulator did not compile is a
// compilation error, never a silent run of other code.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))

typedef int nvrtcResult;
enum : nvrtcResult {
    NVRTC_SUCCESS = 0,
    NVRTC_ERROR_INVALID_INPUT = 3,
    NVRTC_ERROR_INVALID_PROGRAM = 4,
    NVRTC_ERROR_COMPILATION = 6,
};

// From libcuda.so (driver.cpp), which this library is linked against.
extern "C" int bge_emu_source_hash(const char* name, unsigned long long* hash);
extern "C" unsigned long long bge_emu_fnv1a(const char* text, size_t len);

namespace {
struct Program {
    std::string name, source;
    std::vector<std::pair<std::string, std::string>> headers;  // (include name, text)
    std::string log, image;
};

bool matches_build(const std::string& name, const std::string& text, std::string* log) {
    unsigned long long want = 0;
    if (!bge_emu_source_hash(name.c_str(), &want)) {
        *log = "the CUDA emulator was not built with a kernel file named " + name;
        return false;
    }
    if (bge_emu_fnv1a(text.data(), text.size()) != want) {
        *log = name + " differs from the text the CUDA emulator was built from (rebuild it)";
        return false;
    }
    return true;
}
}  // namespace

EXPORT nvrtcResult nvrtcVersion(int* major, int* minor) {
    // Not a real NVRTC version, so that pg_bge's module cache key never matches a real build.
    *major = 0;
    *minor = 0;
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcGetNumSupportedArchs(int* n) {
    *n = 1;
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcGetSupportedArchs(int* archs) {
    archs[0] = 90;  // the emulated device reports compute capability 9.0
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcCreateProgram(void** prog, const char* src, const char* name, int num_headers,
                                      const char* const* headers, const char* const* include_names) {
    if (!prog || !src) return NVRTC_ERROR_INVALID_INPUT;
    Program* p = new Program;
    p->name = name ? name : "default_program";
    p->source = src;
    for (int i = 0; i < num_headers; ++i) p->headers.emplace_back(include_names[i], headers[i]);
    *prog = p;
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcDestroyProgram(void** prog) {
    if (!prog || !*prog) return NVRTC_ERROR_INVALID_PROGRAM;
    delete (Program*)*prog;
    *prog = nullptr;
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcCompileProgram(void* prog, int, const char* const*) {
    Program* p = (Program*)prog;
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!matches_build(p->name, p->source, &p->log)) return NVRTC_ERROR_COMPILATION;
    for (auto& [name, text] : p->headers)
        if (!matches_build(name, text, &p->log)) return NVRTC_ERROR_COMPILATION;
    p->image = "pg_bge-emulated-module:" + p->name;
    p->image.push_back('\0');
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcGetCUBINSize(void* prog, size_t* size) {
    Program* p = (Program*)prog;
    if (!p || p->image.empty()) return NVRTC_ERROR_INVALID_PROGRAM;
    *size = p->image.size();
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcGetCUBIN(void* prog, char* out) {
    Program* p = (Program*)prog;
    if (!p || p->image.empty()) return NVRTC_ERROR_INVALID_PROGRAM;
    std::memcpy(out, p->image.data(), p->image.size());
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcGetPTXSize(void* prog, size_t* size) { return nvrtcGetCUBINSize(prog, size); }
EXPORT nvrtcResult nvrtcGetPTX(void* prog, char* out) { return nvrtcGetCUBIN(prog, out); }
EXPORT nvrtcResult nvrtcGetProgramLogSize(void* prog, size_t* size) {
    Program* p = (Program*)prog;
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    *size = p->log.size() + 1;
    return NVRTC_SUCCESS;
}
EXPORT nvrtcResult nvrtcGetProgramLog(void* prog, char* out) {
    Program* p = (Program*)prog;
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    std::memcpy(out, p->log.c_str(), p->log.size() + 1);
    return NVRTC_SUCCESS;
}
EXPORT const char* nvrtcGetErrorString(nvrtcResult r) {
    switch (r) {
        case NVRTC_SUCCESS: return "NVRTC_SUCCESS";
        case NVRTC_ERROR_INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
        case NVRTC_ERROR_INVALID_PROGRAM: return "NVRTC_ERROR_INVALID_PROGRAM";
        case NVRTC_ERROR_COMPILATION: return "NVRTC_ERROR_COMPILATION";
        default: return "NVRTC_ERROR";
    }
}
