using GpuExecutor.AdminLog;
using GpuExecutor.Composition;
using GpuExecutor.Configuration;
using GpuExecutor.Protocol;

namespace GpuExecutor.Verbs;

/// <summary>
/// What every verb gets: the config, the adapters, the runner's environment, a log, the stop
/// token, and the facts its admin log line will carry.
/// </summary>
public sealed record VerbContext(ExecutorConfig Config, CompositionRoot Adapters, IRunnerEnvironment Environment, TextWriter Log, CancellationToken Stop, VerbFacts Facts);
