using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using GpuExecutor.Protocol;

namespace GpuExecutor.Simulation;

public sealed record SimulatorOptions
{
    /// <summary>The executor binary, and the arguments that precede each verb (like config_args without the verb).</summary>
    public required string Executable { get; init; }
    public IReadOnlyList<string> ExecutorArguments { get; init; } = [];

    /// <summary>Cancel the job this long after the first user step starts (like pressing Cancel in GitLab).</summary>
    public TimeSpan? CancelAfter { get; init; }

    /// <summary>The runner's graceful_kill_timeout: SIGTERM, then this, then SIGKILL.</summary>
    public TimeSpan GracefulKillTimeout { get; init; } = TimeSpan.FromSeconds(600);

    /// <summary>The runner's force_kill_timeout: after SIGKILL, how long to wait for the process.</summary>
    public TimeSpan ForceKillTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>On job timeout the runner waits at most this for the stage before calling cleanup.</summary>
    public TimeSpan TimeoutCleanupWait { get; init; } = TimeSpan.FromMinutes(5);

    public int PrepareAttempts { get; init; } = 3;
    public TimeSpan PrepareRetryDelay { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Relative job paths (sources) resolve against this directory.</summary>
    public string JobDirectory { get; init; } = ".";

    /// <summary>After get_sources, where the runner downloads the artifacts of earlier jobs: the pipeline puts them in place.</summary>
    public Func<Task>? AfterSources { get; init; }

    /// <summary>Before cleanup, where the runner uploads the job's artifacts: the pipeline keeps them.</summary>
    public Func<Task>? BeforeCleanup { get; init; }
}

/// <summary>
/// Plays GitLab Runner against a custom executor, following docs/runner-protocol.md: the temp dir and
/// response.json, the environment, the stage order and skip rules, preparation retries with
/// cleanup after each failed attempt, BUILD_EXIT_CODE_FILE, and cancel and timeout as SIGTERM,
/// the grace period, then SIGKILL. No GitLab or runner binary can run here; this is how the
/// project's end-to-end tests and demo drive the executor.
/// </summary>
public sealed class RunnerSimulator(SimulatorOptions options, TextWriter log)
{
    private readonly Lock _logLock = new();
    private readonly SimulationResult _result = new();

    public async Task<SimulationResult> RunAsync(SimulatedJob job, CancellationToken cancelJob)
    {
        var jobId = job.JobId ?? Random.Shared.NextInt64(100_000, 1_000_000_000);
        _result.JobId = jobId;
        var temp = Directory.CreateTempSubdirectory("custom-executor");
        try
        {
            return await RunInTempAsync(job, jobId, temp.FullName, cancelJob);
        }
        finally
        {
            try { temp.Delete(recursive: true); } catch (IOException) { }
        }
    }

    private async Task<SimulationResult> RunInTempAsync(SimulatedJob job, long jobId, string temp, CancellationToken cancelJob)
    {
        var startedAt = Stopwatch.StartNew();
        var deadline = TimeSpan.FromSeconds(job.Timeout > 0 ? job.Timeout : 7200);
        var variables = JobVariables(job, jobId);
        WritePayload(job, jobId, variables, Path.Combine(temp, "response.json"));

        var exitCodeFile = Path.Combine(temp, "build_exit_code");
        var protocolEnvironment = new Dictionary<string, string>
        {
            ["TMPDIR"] = temp,
            [RunnerVariables.BuildFailureExitCode] = "1",
            [RunnerVariables.SystemFailureExitCode] = "2",
            [RunnerVariables.BuildExitCodeFile] = exitCodeFile,
            [RunnerVariables.JobResponseFile] = Path.Combine(temp, "response.json"),
        };

        // Preparation: config then prepare, up to three attempts, cleanup after each failure.
        ConfigOutput? config = null;
        var prepared = false;
        for (var attempt = 1; attempt <= options.PrepareAttempts && !prepared; attempt++)
        {
            _result.PrepareAttempts = attempt;
            if (attempt > 1)
            {
                Log($"WARNING: Preparation failed. Retrying in {options.PrepareRetryDelay.TotalSeconds:0} s (attempt {attempt} of {options.PrepareAttempts})...");
                await Task.Delay(options.PrepareRetryDelay, CancellationToken.None);
            }

            var configEnvironment = Merge(protocolEnvironment, Custom(variables));
            var configCall = await CallAsync("config", ["config"], temp, configEnvironment, captureStdout: true);
            config = configCall.ExitCode == 0 ? ParseConfig(configCall.Stdout) : null;
            if (config is null)
            {
                Log(configCall.ExitCode == 0 ? "ERROR: config printed invalid JSON." : $"ERROR: config exited with {configCall.ExitCode}.");
                await CleanupAsync(temp, protocolEnvironment, config, variables);
                continue;
            }

            var prepare = await CallAsync("prepare", ["prepare"], temp, Merge(protocolEnvironment, config.JobEnv, Custom(variables)));
            if (prepare.ExitCode == 0)
            {
                prepared = true;
                break;
            }

            await CleanupAsync(temp, protocolEnvironment, config, variables);
            if (prepare.ExitCode == 1)
                return Finish("failed", "ERROR: Job failed: preparation failed (build failure, not retried).", exitCode: 1);
        }

        if (!prepared || config is null)
            return Finish("system_failure", $"ERROR: Job failed (system failure): preparation failed {options.PrepareAttempts} times.");

        var projectDir = $"{config.BuildsDir.TrimEnd('/')}/{job.ProjectPath}";
        variables["CI_BUILDS_DIR"] = config.BuildsDir;
        variables["CI_PROJECT_DIR"] = projectDir;
        var runEnvironment = Merge(protocolEnvironment, config.JobEnv);

        var stages = new StagePlan(job, options.JobDirectory);
        var run = new JobRun(this, temp, runEnvironment, variables, projectDir, exitCodeFile, startedAt, deadline, options.CancelAfter, cancelJob, options.AfterSources);
        var outcome = await run.ExecuteAsync(stages);

        if (options.BeforeCleanup is not null)
            await options.BeforeCleanup();
        await CleanupAsync(temp, protocolEnvironment, config, variables);
        return outcome switch
        {
            { Status: "success" } => Finish("success", "Job succeeded"),
            { Status: "timeout" } => Finish("timeout", $"ERROR: Job failed: execution took longer than {deadline.TotalSeconds:0} seconds"),
            { Status: "canceled" } => Finish("canceled", "ERROR: Job was canceled"),
            { Status: "system_failure" } => Finish("system_failure", $"ERROR: Job failed (system failure): {outcome.Message}"),
            _ => Finish("failed", $"ERROR: Job failed: exit code {outcome.ExitCode}", outcome.ExitCode),
        };
    }

    private SimulationResult Finish(string outcome, string message, int? exitCode = null)
    {
        _result.Outcome = outcome;
        _result.Message = message;
        _result.ExitCode = exitCode;
        Log(message);
        return _result;
    }

    private async Task CleanupAsync(string temp, Dictionary<string, string> protocolEnvironment, ConfigOutput? config, Dictionary<string, string> variables)
    {
        _result.CleanupCalls++;
        await CallAsync("cleanup", ["cleanup"], temp, Merge(protocolEnvironment, config?.JobEnv ?? [], Custom(variables)));
    }

    internal sealed record CallResult(int ExitCode, string Stdout, string? Signalled);

    /// <summary>One executor call. The returned task ends when the process does (or was abandoned after SIGKILL).</summary>
    internal async Task<CallResult> CallAsync(
        string name,
        IReadOnlyList<string> verbArguments,
        string temp,
        IReadOnlyDictionary<string, string> environment,
        bool captureStdout = false,
        CancellationToken stop = default,
        CancellationToken timeout = default)
    {
        var stdout = new System.Text.StringBuilder();
        var clock = Stopwatch.StartNew();
        using var process = ProcessGroup.Start(
            options.Executable,
            [.. options.ExecutorArguments, .. verbArguments],
            temp,
            environment,
            (chunk, isError) =>
            {
                if (captureStdout && !isError)
                    stdout.Append(chunk);
                else
                    Write(chunk);
            });

        string? signalled = null;
        int? exitCode = null;
        using var stopOrTimeout = CancellationTokenSource.CreateLinkedTokenSource(stop, timeout);
        var exited = process.WaitAsync(Timeout.InfiniteTimeSpan);
        var interrupted = new TaskCompletionSource();
        await using (stopOrTimeout.Token.Register(() => interrupted.TrySetResult()))
        {
            if (await Task.WhenAny(exited, interrupted.Task) == exited)
                exitCode = await exited;
        }
        if (exitCode is null)
        {
            signalled = timeout.IsCancellationRequested ? "timeout" : "cancel";
            exitCode = await TerminateAsync(process, name, abandonAfter: signalled == "timeout" ? options.TimeoutCleanupWait : null);
        }

        var call = new SimulatedCall
        {
            Name = name,
            ExitCode = exitCode ?? -1,
            Signalled = signalled,
            Seconds = Math.Round(clock.Elapsed.TotalSeconds, 3),
        };
        lock (_result.Calls)
            _result.Calls.Add(call);
        return new CallResult(exitCode ?? -1, stdout.ToString(), signalled);
    }

    /// <summary>SIGTERM to the group, graceful_kill_timeout, SIGKILL, force_kill_timeout.</summary>
    private async Task<int?> TerminateAsync(ProcessGroup process, string name, TimeSpan? abandonAfter)
    {
        Log($"Sending SIGTERM to the {name} process group (graceful_kill_timeout {options.GracefulKillTimeout.TotalSeconds:0} s).");
        process.SignalGroup(ProcessGroup.SigTerm);
        var graceful = abandonAfter is { } limit && limit < options.GracefulKillTimeout ? limit : options.GracefulKillTimeout;
        var exitCode = await process.WaitAsync(graceful);
        if (exitCode is not null)
            return exitCode;
        if (abandonAfter is not null && abandonAfter < options.GracefulKillTimeout)
        {
            // Job timeout: the runner stops waiting and goes on to cleanup while the stage may
            // still be inside its grace period (docs/runner-protocol.md); it is killed later.
            Log($"The {name} process outlived the {abandonAfter.Value.TotalSeconds:0} s timeout wait; going on to cleanup.");
            _ = Task.Delay(options.GracefulKillTimeout - abandonAfter.Value).ContinueWith(_ => process.SignalGroup(ProcessGroup.SigKill), TaskScheduler.Default);
            return null;
        }
        Log($"Sending SIGKILL to the {name} process group.");
        process.SignalGroup(ProcessGroup.SigKill);
        return await process.WaitAsync(options.ForceKillTimeout);
    }

    /// <summary>A line of the simulator's own, in the job log.</summary>
    internal void Log(string line) => Write(line + "\n");

    /// <summary>Output of an executor call, passed through unchanged.</summary>
    private void Write(string text)
    {
        lock (_logLock)
        {
            log.Write(text);
            log.Flush();
        }
    }

    private static ConfigOutput? ParseConfig(string stdout)
    {
        if (stdout.Trim().Length == 0)
            return new ConfigOutput { BuildsDir = "/builds", CacheDir = "/cache" };
        try
        {
            var config = JsonSerializer.Deserialize(stdout, ProtocolJsonContext.Default.ConfigOutput);
            if (config is not null)
                config.JobEnv ??= [];
            return config;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static Dictionary<string, string> JobVariables(SimulatedJob job, long jobId)
    {
        string Text(long number) => number.ToString(CultureInfo.InvariantCulture);
        // The predefined variables first, so the job's own can override them, as in GitLab.
        var variables = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["CI"] = "true",
            ["GITLAB_CI"] = "true",
            ["CI_JOB_ID"] = Text(jobId),
            ["CI_JOB_NAME"] = job.Name,
            ["CI_JOB_STAGE"] = job.Stage,
            ["CI_JOB_TOKEN"] = "simulated-job-token-" + Text(jobId),
            ["CI_JOB_TIMEOUT"] = Text(job.Timeout),
            ["CI_PROJECT_ID"] = Text(job.ProjectId),
            ["CI_PROJECT_PATH"] = job.ProjectPath,
            ["CI_PIPELINE_ID"] = Text(job.PipelineId),
            ["CI_COMMIT_REF_NAME"] = job.Ref,
            ["CI_COMMIT_SHA"] = "0000000000000000000000000000000000000000",
            ["CI_CONCURRENT_ID"] = "0",
            ["CI_CONCURRENT_PROJECT_ID"] = "0",
            ["CI_RUNNER_TAGS"] = "[\"gpu\"]",
            ["CI_SERVER_URL"] = "https://gitlab.invalid",
            ["CI_API_V4_URL"] = "https://gitlab.invalid/api/v4",
            ["CI_JOB_SERVICES"] = "[]",
        };
        if (job.Image is not null)
            variables["CI_JOB_IMAGE"] = job.Image;
        foreach (var (key, value) in job.Variables)
            variables[key] = value;
        return variables;
    }

    private static void WritePayload(SimulatedJob job, long jobId, Dictionary<string, string> variables, string path)
    {
        var steps = new List<JobStep>();
        if (job.Script.Count > 0)
            steps.Add(new JobStep { Name = "script", Script = job.Script, Timeout = job.Timeout });
        steps.AddRange(job.Steps.Select(step => new JobStep { Name = step.Name, Script = step.Script, Timeout = job.Timeout }));
        if (job.AfterScript.Count > 0)
            steps.Add(new JobStep { Name = "after_script", Script = job.AfterScript, When = "always", Timeout = 300 });

        var payload = new JobPayload
        {
            Id = jobId,
            Token = "simulated-job-token-" + jobId.ToString(CultureInfo.InvariantCulture),
            JobInfo = new JobInfo
            {
                Name = job.Name,
                Stage = job.Stage,
                ProjectId = job.ProjectId,
                ProjectName = job.ProjectPath.Split('/')[^1],
                ProjectFullPath = job.ProjectPath,
                PipelineId = job.PipelineId,
            },
            GitInfo = new GitInfo { Ref = job.Ref, Sha = variables["CI_COMMIT_SHA"], RepoUrl = "https://gitlab.invalid/" + job.ProjectPath + ".git" },
            RunnerInfo = new RunnerInfo { Timeout = job.Timeout },
            Variables = variables.Select(pair => new JobVariable { Key = pair.Key, Value = pair.Value, Public = !job.Masked.Contains(pair.Key), Masked = job.Masked.Contains(pair.Key) }).ToList(),
            Steps = steps,
            Image = job.Image is null ? null : new JobImage { Name = job.Image },
        };
        // 0600, as the runner writes it: the payload holds the job token and secrets.
        using var file = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite });
        JsonSerializer.Serialize(file, payload, ProtocolJsonContext.Default.JobPayload);
    }

    internal static Dictionary<string, string> Custom(IReadOnlyDictionary<string, string> variables) =>
        variables.ToDictionary(pair => RunnerVariables.JobVariablePrefix + pair.Key, pair => pair.Value);

    /// <summary>Later maps win, as in the runner's environment order.</summary>
    internal static Dictionary<string, string> Merge(params IReadOnlyDictionary<string, string>[] layers)
    {
        var merged = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var layer in layers)
            foreach (var (key, value) in layer)
                merged[key] = value;
        return merged;
    }
}
