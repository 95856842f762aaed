//! The CPU path's custom operations on burn's flex tensors. Each takes its inputs' buffers as
//! they are (`Tensor::try_into_primitive::<Flex>`: no copy for a contiguous tensor), runs one
//! pass of hearth-kernels over them and wraps the result back as a `Tensor`. A decode step's
//! tensors are a few hundred values, where a chain of general tensor operations (each an
//! allocation and a dispatch) costs more than the arithmetic.

use std::borrow::Cow;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use burn_flex::FlexTensor;

use super::ModelError;

/// A flex tensor's values, row-major.
pub(crate) struct HostValues {
    tensor: FlexTensor,
}

impl HostValues {
    pub fn get<const D: usize>(t: Tensor<D>) -> Result<Self, ModelError> {
        Ok(Self { tensor: primitive(t)? })
    }

    /// The values (borrowed when the tensor is contiguous, which the CPU path's are).
    pub fn values(&self) -> Cow<'_, [f32]> {
        match self.tensor.as_slice::<f32>() {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(self.tensor.to_contiguous().as_slice::<f32>().map(<[f32]>::to_vec).unwrap_or_default()),
        }
    }
}

/// The flex primitive behind `t`.
fn primitive<const D: usize>(t: Tensor<D>) -> Result<FlexTensor, ModelError> {
    t.try_into_primitive::<Flex>()
        .map_err(|e| ModelError::Execution(format!("a CPU operation got a tensor from another device: {e:?}")))
}

/// Wraps `data` as a flex tensor of `shape`.
pub(crate) fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(data, shape)))
}

/// `f` applied to the tensor's values in place (in its own buffer when it is the only owner,
/// else in a copy), same shape.
pub(crate) fn map_in_place<const D: usize>(t: Tensor<D>, f: impl FnOnce(&mut [f32])) -> Result<Tensor<D>, ModelError> {
    let mut tensor = primitive(t)?;
    if !tensor.is_contiguous() || tensor.layout().start_offset() != 0 {
        tensor = tensor.to_contiguous();
    }
    let n = tensor.layout().num_elements();
    f(&mut tensor.storage_mut::<f32>()[..n]);
    Ok(Tensor::from_primitive::<Flex>(tensor))
}
