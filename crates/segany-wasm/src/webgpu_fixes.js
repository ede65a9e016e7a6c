// Runs before burn's wgpu runtime starts in a browser (the encoder worker's first script; the
// wasm tests evaluate it too). Two gaps between wgpu 30, cubecl 0.11 and browsers' WebGPU:
// 1. cubecl's WGSL says `enable subgroups;` where the adapter has subgroups, but wgpu's WebGPU
//    backend never asks for that feature, so the browser rejects the shader and the device is
//    lost. Ask for it whenever the adapter offers it.
// 2. Browsers' uniformity analysis rejects subgroup operations in control flow it cannot prove
//    uniform, which cubecl's reductions use on purpose: turn that diagnostic off in such shaders.
(() => {
  if (typeof GPUAdapter === 'undefined' || GPUAdapter.prototype.seganyFixed) return;
  GPUAdapter.prototype.seganyFixed = true;
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function (descriptor) {
    const d = Object.assign({}, descriptor);
    const features = Array.from(d.requiredFeatures || []);
    if (this.features.has('subgroups') && !features.includes('subgroups')) features.push('subgroups');
    d.requiredFeatures = features;
    return requestDevice.call(this, d);
  };
  const createShaderModule = GPUDevice.prototype.createShaderModule;
  GPUDevice.prototype.createShaderModule = function (descriptor) {
    if (descriptor && typeof descriptor.code === 'string' && descriptor.code.includes('enable subgroups')) {
      descriptor = Object.assign({}, descriptor, { code: 'diagnostic(off, subgroup_uniformity);\n' + descriptor.code });
    }
    return createShaderModule.call(this, descriptor);
  };
})();
