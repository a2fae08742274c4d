using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Registration;

/// <summary>
/// One [[runners]] entry of GitLab Runner's config.toml, reduced to what must agree with this
/// executor's config: its directories, the four stages' programs and arguments, and its kill timeouts.
/// </summary>
public sealed record RunnerEntry(
    string Name,
    string Executor,
    string? BuildsDir,
    string? CacheDir,
    IReadOnlyDictionary<string, string> Execs,
    IReadOnlyDictionary<string, IReadOnlyList<string>> Args,
    long? GracefulKillTimeout,
    long? ForceKillTimeout)
{
    /// <summary>Every [[runners]] entry of a GitLab Runner config.toml (<see cref="RunnerConfigFile"/>).</summary>
    public static IReadOnlyList<RunnerEntry> ParseFile(string toml, string sourceName) => RunnerConfigFile.Parse(toml, sourceName);

    /// <summary>The stages the runner calls, each with its *_exec and *_args.</summary>
    public static readonly IReadOnlyList<string> Stages = ["config", "prepare", "run", "cleanup"];

    /// <summary>[[runners]] output_limit: the most of a job's log, in KiB, the runner sends to GitLab.</summary>
    public long? OutputLimitKiB { get; init; }

    /// <summary>GitLab Runner's own default for output_limit, in KiB.</summary>
    public const long DefaultOutputLimitKiB = 4096;

    /// <summary>What the job log needs beyond the steps' budget: the other stages' lines and the executor's own.</summary>
    public const long JobLogHeadroomBytes = 256 * 1024;

    /// <summary>GitLab Runner's own default for [runners.custom] graceful_kill_timeout, in seconds.</summary>
    public const long DefaultGracefulKillTimeout = 600;

    public long EffectiveGracefulKillTimeout => GracefulKillTimeout ?? DefaultGracefulKillTimeout;

    /// <summary>Whether any stage runs the given binary (by path, or by file name when it is on PATH).</summary>
    public bool Runs(string binary) =>
        Execs.Values.Any(exec => exec == binary || Path.GetFileName(exec) == Path.GetFileName(binary));

    /// <summary>The executor config the config stage names with --config, or null for the default.</summary>
    public string? ExecutorConfigPath =>
        Args.GetValueOrDefault("config") is { } args && args.ToList().IndexOf("--config") is >= 0 and var at && at + 1 < args.Count ? args[at + 1] : null;

    /// <summary>
    /// Where this entry and the executor config it names disagree, each with its fix: a runner
    /// that would put the checkout elsewhere than the container mounts it, stages that call
    /// different configs, or a kill timeout that would SIGKILL the executor before the job's
    /// last checkpoint is safe.
    /// </summary>
    public IReadOnlyList<(string Problem, string Fix)> DisagreementsWith(ExecutorConfig config)
    {
        var problems = new List<(string, string)>();
        if (Executor != "custom")
            problems.Add(($"executor is \"{Executor}\", not \"custom\"", "set executor = \"custom\""));
        if (BuildsDir is not null && BuildsDir.TrimEnd('/') != config.Builds.ContainerDir.TrimEnd('/'))
            problems.Add(($"builds_dir is {BuildsDir}, but the executor mounts builds at [builds].container_dir = {config.Builds.ContainerDir}",
                $"set builds_dir = \"{config.Builds.ContainerDir}\" (or remove it: the config stage reports it)"));
        if (CacheDir is not null && CacheDir.TrimEnd('/') != config.Cache.ContainerDir.TrimEnd('/'))
            problems.Add(($"cache_dir is {CacheDir}, but the executor mounts the cache at [cache].container_dir = {config.Cache.ContainerDir}",
                $"set cache_dir = \"{config.Cache.ContainerDir}\" (or remove it: the config stage reports it)"));
        foreach (var stage in Stages)
        {
            if (!Execs.ContainsKey(stage))
                problems.Add(($"custom.{stage}_exec is missing", $"set {stage}_exec to the gpu-executor binary"));
            var stageArgs = Args.GetValueOrDefault(stage) ?? [];
            if (stageArgs.Count == 0 || stageArgs[^1] != stage)
                problems.Add(($"custom.{stage}_args does not end with the verb \"{stage}\"", $"set {stage}_args = [\"--config\", \"PATH\", \"{stage}\"]"));
            var stageConfig = stageArgs.ToList().IndexOf("--config") is >= 0 and var at && at + 1 < stageArgs.Count ? stageArgs[at + 1] : null;
            if (stageConfig != ExecutorConfigPath)
                problems.Add(($"custom.{stage}_args names the config {stageConfig ?? "(default)"}, the config stage {ExecutorConfigPath ?? "(default)"}",
                    "give every stage the same --config PATH"));
        }
        var outputLimit = OutputLimitKiB ?? DefaultOutputLimitKiB;
        if (outputLimit * 1024 < config.Logs.JobLogBudgetBytes + JobLogHeadroomBytes)
            problems.Add(($"output_limit is {outputLimit} KiB{(OutputLimitKiB is null ? " (the runner's default)" : "")}, but logs.job_log_budget is {config.Logs.JobLogBudgetBytes / 1024} KiB: the runner would cut the job log before the lines the budget keeps for errors and losses",
                $"set output_limit = {(config.Logs.JobLogBudgetBytes + JobLogHeadroomBytes) / 1024 + 1} (or more) in the [[runners]] entry, or lower logs.job_log_budget"));
        var needed = (long)Math.Ceiling((config.Run.StopGracePeriod + config.Checkpoints.FinalCommitWait).TotalSeconds);
        var declared = (long)config.Run.RunnerGracefulKillTimeout.TotalSeconds;
        if (EffectiveGracefulKillTimeout <= needed)
            problems.Add(($"graceful_kill_timeout is {EffectiveGracefulKillTimeout} s{(GracefulKillTimeout is null ? " (the runner's default)" : "")}, not more than run.stop_grace_seconds + checkpoints.final_commit_wait_seconds = {needed} s: the runner would SIGKILL the executor before the job's last checkpoint is committed",
                $"set [runners.custom] graceful_kill_timeout = {needed + 60} (or more), or lower those two"));
        if (declared != EffectiveGracefulKillTimeout)
            problems.Add(($"run.runner_graceful_kill_timeout_seconds is {declared}, the runner's graceful_kill_timeout {EffectiveGracefulKillTimeout}",
                $"set run.runner_graceful_kill_timeout_seconds = {EffectiveGracefulKillTimeout} in the executor config"));
        return problems;
    }
}
