using GpuExecutor;
using GpuExecutor.Protocol;

return await CommandLine.RunAsync(args, ProcessRunnerEnvironment.Instance);
