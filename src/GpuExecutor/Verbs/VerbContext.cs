using GpuExecutor.Composition;
using GpuExecutor.Configuration;
using GpuExecutor.Protocol;

namespace GpuExecutor.Verbs;

/// <summary>What every verb gets: the config, the adapters, the runner's environment, a log, and the stop token.</summary>
public sealed record VerbContext(ExecutorConfig Config, CompositionRoot Adapters, IRunnerEnvironment Environment, TextWriter Log, CancellationToken Stop);
