//! Linear layers through cuBLAS: 16-bit inputs (f16 or bf16), f32 accumulation and f32 output,
//! so the bias, activation and LayerNorm kernels that follow read full-precision sums.
//!
//! Row-major y[rows, out] = x[rows, in] · Wᵀ with W [out, in] (PyTorch's nn.Linear layout) is,
//! in cuBLAS's column-major terms, yᵀ = W · xᵀ: a "TN" GEMM with m = out, n = rows, k = in,
//! A = W (lda = in, transposed), B = x (ldb = in), C = y (ldc = out). The bias is not applied
//! here; the next kernel adds it while it reads y anyway.
use std::ffi::c_void;

use cudarc::cublas::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::Half;

/// A cuBLAS handle bound to the device's stream. Only used under `Device::exec`.
pub struct Blas {
    handle: sys::cublasHandle_t,
}

// SAFETY: the handle is only used while the Device's exec mutex is held.
unsafe impl Send for Blas {}

impl Blas {
    pub(crate) fn new(stream: &CudaStream) -> Result<Blas, String> {
        stream.context().bind_to_thread().map_err(|e| format!("CUDA context ({e:?})"))?;
        let handle = result::create_handle().map_err(|e| format!("cannot create a cuBLAS handle ({e:?})"))?;
        let blas = Blas { handle };
        // SAFETY: a live handle and the stream of the same context.
        unsafe { result::set_stream(handle, stream.cu_stream() as _) }.map_err(|e| format!("cuBLAS set stream ({e:?})"))?;
        Ok(blas)
    }

    /// y[rows, out] = x[rows, in] · w[out, in]ᵀ, x and w in `precision`, y in f32.
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        &mut self,
        stream: &CudaStream,
        precision: Half,
        x: &CudaSlice<u16>,
        rows: usize,
        w: &CudaSlice<u16>,
        out_features: usize,
        in_features: usize,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        if x.len() < rows * in_features || w.len() < out_features * in_features || y.len() < rows * out_features {
            return Err(format!("GEMM buffers too small for [{rows}, {in_features}] x [{out_features}, {in_features}]"));
        }
        if rows == 0 {
            return Ok(());
        }
        let dtype = match precision {
            Half::F16 => sys::cudaDataType::CUDA_R_16F,
            Half::Bf16 => sys::cudaDataType::CUDA_R_16BF,
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (x_ptr, _x) = x.device_ptr(stream);
        let (w_ptr, _w) = w.device_ptr(stream);
        let (y_ptr, _y) = y.device_ptr_mut(stream);
        // SAFETY: sizes checked above; pointers are device buffers of this context; alpha and
        // beta are host f32 (the handle's default pointer mode) matching CUBLAS_COMPUTE_32F.
        unsafe {
            result::gemm_ex(
                self.handle,
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                out_features as i32,
                rows as i32,
                in_features as i32,
                &alpha as *const f32 as *const c_void,
                w_ptr as *const c_void,
                dtype,
                in_features as i32,
                x_ptr as *const c_void,
                dtype,
                in_features as i32,
                &beta as *const f32 as *const c_void,
                y_ptr as *mut c_void,
                sys::cudaDataType::CUDA_R_32F,
                out_features as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| format!("cuBLAS GEMM [{rows}, {in_features}] x [{out_features}, {in_features}]ᵀ failed ({e:?})"))
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle is live and dropped once; a failure at teardown is ignored rather
        // than panicking (cudarc's own wrapper unwraps here).
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}
