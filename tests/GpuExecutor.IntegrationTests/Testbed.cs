using System.Diagnostics;
using System.Text;
using System.Text.Json;
using GpuExecutor.Simulation;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The real parts these tests drive: the dockerd started by scripts/testbed.sh (DOCKER_HOST), the
/// local bash test image, and the published gpu-executor binary. scripts/test.sh sets all three.
/// </summary>
public static class Testbed
{
    public static string DockerHost => Environment.GetEnvironmentVariable("DOCKER_HOST") ?? "";
    public static string TestImage => Environment.GetEnvironmentVariable("GPU_EXECUTOR_TEST_IMAGE") ?? "gpu-executor-test/bash:1";
    public static string Binary => Environment.GetEnvironmentVariable("GPU_EXECUTOR_BINARY") ?? Path.Combine(RepositoryRoot, "artifacts", "bin", "gpu-executor");

    public static string RepositoryRoot { get; } = FindRepositoryRoot();

    /// <summary>
    /// Skips (with the reason) when run outside the test bed, e.g. a bare `dotnet test`; under
    /// scripts/test.sh, GPU_EXECUTOR_REQUIRE_TESTBED=1 turns a missing test bed into a failure.
    /// </summary>
    public static void Require()
    {
        string? missing = null;
        if (!DockerHost.StartsWith("unix://", StringComparison.Ordinal))
            missing = "DOCKER_HOST is not set to the test bed's socket";
        else if (!File.Exists(Binary))
            missing = $"the published binary {Binary} does not exist";
        if (missing is not null)
            Missing($"needs the test bed ({missing}); run scripts/test.sh");
    }

    /// <summary>
    /// A part of the test bed is missing: the test skips saying why, or, under scripts/test.sh
    /// (GPU_EXECUTOR_REQUIRE_TESTBED=1), fails, since there nothing may be silently skipped.
    /// </summary>
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    public static void Missing(string reason)
    {
        if (Environment.GetEnvironmentVariable("GPU_EXECUTOR_REQUIRE_TESTBED") == "1")
            Assert.Fail(reason);
        Assert.Skip(reason);
    }

    /// <summary>The Docker CLI, to check the daemon's state independently of the executor.</summary>
    public static async Task<string> DockerAsync(params string[] arguments)
    {
        var (exitCode, stdout, stderr) = await RunAsync("docker", ["--host", DockerHost, .. arguments], null, null);
        if (exitCode != 0)
            throw new InvalidOperationException($"docker {string.Join(' ', arguments)} failed ({exitCode}): {stderr}");
        return stdout;
    }

    /// <summary>Ids of every container (running or not) labelled with this job id, per the Docker CLI.</summary>
    public static Task<string> JobContainersAsync(long jobId) =>
        DockerAsync("ps", "-aq", "--filter", $"label=io.gpu-executor.job.id={jobId}");

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(
        string program,
        IEnumerable<string> arguments,
        IReadOnlyDictionary<string, string?>? environment,
        string? workingDirectory,
        TimeSpan? timeout = null,
        Action<string>? onStdoutLine = null)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        foreach (var (key, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value is null)
                start.Environment.Remove(key);
            else
                start.Environment[key] = value;
        }

        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = onStdoutLine is null ? process.StandardOutput.ReadToEndAsync() : ReadLinesAsync(process.StandardOutput, onStdoutLine);
        var stderr = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(3));
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)} did not finish in time; output so far: {await stdout}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Everything a stream says, each line handed on as it comes: for tests that wait on what a job prints.</summary>
    private static async Task<string> ReadLinesAsync(StreamReader reader, Action<string> onLine)
    {
        var all = new StringBuilder();
        while (await reader.ReadLineAsync() is { } line)
        {
            all.Append(line).Append('\n');
            onLine(line);
        }
        return all.ToString();
    }

    private static string FindRepositoryRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "GpuExecutor.sln")))
            directory = directory.Parent;
        return directory?.FullName ?? throw new InvalidOperationException("GpuExecutor.sln not found above the test binaries.");
    }
}

/// <summary>One test's private executor setup: a config, builds and cache dirs, all in a temp dir.</summary>
public sealed class ExecutorWorkspace : IDisposable
{
    /// <param name="hostName">The config's host_name, for tests that model several hosts sharing one store.</param>
    /// <param name="containerNetwork">container.network_mode: "host" lets a job reach a fake server on the host's loopback.</param>
    /// <param name="containerConfig">More [container] keys (memory, pids_limit, ...), one per line.</param>
    /// <param name="buildsHostDir">builds.host_dir, when not the workspace's own (a small filesystem, say).</param>
    public ExecutorWorkspace(string? dockerEndpoint = null, bool removeBuildsDir = false, string allowed = "\"gpu-executor-test/*\"", int stopGraceSeconds = 3, string? gpus = null, string extraConfig = "", string? hostName = null, int? daemonReconnectSeconds = null, string? containerNetwork = null, string containerConfig = "", string? buildsHostDir = null)
    {
        Testbed.Require();
        Root = Directory.CreateTempSubdirectory("gpu-executor-it").FullName;
        ConfigPath = Path.Combine(Root, "config.toml");
        File.WriteAllText(ConfigPath, $"""
            state_dir = "{Root}/state"
            {(hostName is null ? "" : $"host_name = \"{hostName}\"")}
            [docker]
            endpoint = "{dockerEndpoint ?? Testbed.DockerHost}"
            [images]
            default = "{Testbed.TestImage}"
            allowed = [{allowed}]
            pull_policy = "never"
            helper = "{Testbed.TestImage}"
            [builds]
            host_dir = "{buildsHostDir ?? Root + "/builds"}"
            container_dir = "/builds"
            [cache]
            host_dir = "{Root}/cache"
            container_dir = "/cache"
            [container]
            shm_size = "128m"
            {(containerNetwork is null ? "" : $"network_mode = \"{containerNetwork}\"")}
            {containerConfig}
            [container.ulimits]
            nofile = "1024:4096"
            [run]
            stop_grace_seconds = {stopGraceSeconds}
            {(daemonReconnectSeconds is { } reconnect ? $"daemon_reconnect_seconds = {reconnect}" : "")}
            [cleanup]
            remove_builds_dir = {(removeBuildsDir ? "true" : "false")}
            {extraConfig}
            {(gpus is null ? "" : "[gpus]\n" + gpus)}
            """);
    }

    public string Root { get; }
    public string ConfigPath { get; }

    /// <summary>CI_PROJECT_DIR of a simulated job, as seen on the host.</summary>
    public string ProjectDirOnHost(long jobId, string projectPath = "ml/demo") =>
        Path.Combine(Root, "builds", $"job-{jobId}", projectPath);

    public sealed record Simulation(int ExitCode, string Log, SimulationResult Result)
    {
        public IReadOnlyList<string> CallNames => Result.Calls.Select(call => call.Name).ToList();
        public SimulatedCall Call(string name) => Result.Calls.Single(call => call.Name == name);
    }

    public Task<Simulation> SimulateAsync(object job, params string[] options) => SimulateAsync(job, null, options);

    /// <param name="onLine">Called with each line of the job log as the simulator prints it.</param>
    public async Task<Simulation> SimulateAsync(object job, Action<string>? onLine, params string[] options)
    {
        var jobPath = Path.Combine(Root, $"job-{Guid.NewGuid():N}.json");
        var resultPath = jobPath + ".result.json";
        await File.WriteAllTextAsync(jobPath, JsonSerializer.Serialize(job));
        var (exitCode, stdout, stderr) = await Testbed.RunAsync(
            Testbed.Binary,
            ["--config", ConfigPath, "simulate", jobPath, "--result", resultPath, "--prepare-retry-delay", "0.2", .. options],
            ExecutorEnvironment,
            Root,
            onStdoutLine: onLine);
        var log = stdout + stderr;
        _outputs.Add(($"the simulated job {Path.GetFileName(jobPath)}'s log (the job log and the executor's stderr)", log));
        Assert.True(File.Exists(resultPath), $"the simulator wrote no result (exit {exitCode}); its log:\n{log}");
        JobLogHygiene.AssertClean(log);
        var result = JsonSerializer.Deserialize(await File.ReadAllTextAsync(resultPath), SimulationJsonContext.Default.SimulationResult)!;
        return new Simulation(exitCode, log, result);
    }

    /// <summary>The environment the runner gives every executor call, for calling verbs directly.</summary>
    public Dictionary<string, string?> RunnerEnvironment(string? responseFile) => new()
    {
        ["TMPDIR"] = Root,
        ["BUILD_FAILURE_EXIT_CODE"] = "1",
        ["SYSTEM_FAILURE_EXIT_CODE"] = "2",
        ["BUILD_EXIT_CODE_FILE"] = BuildExitCodeFile,
        ["JOB_RESPONSE_FILE"] = responseFile,
    };

    public string BuildExitCodeFile => Path.Combine(Root, "build_exit_code");

    /// <summary>A minimal job payload, as the runner writes response.json; returns its path.</summary>
    public string WritePayload(long jobId, IReadOnlyDictionary<string, string>? variables = null)
    {
        var path = Path.Combine(Root, $"response-{jobId}.json");
        var payload = new
        {
            id = jobId,
            job_info = new { name = "train", project_id = 3, project_full_path = "ml/demo", pipeline_id = 9 },
            git_info = new { @ref = "main" },
            runner_info = new { timeout = 600 },
            image = new { name = Testbed.TestImage },
            variables = (variables ?? new Dictionary<string, string>()).Select(pair => new { key = pair.Key, value = pair.Value, @public = true }).ToArray(),
        };
        File.WriteAllText(path, JsonSerializer.Serialize(payload));
        return path;
    }

    /// <summary>
    /// A stand-in for nvidia-smi (none can run without a GPU): a script that prints the given
    /// query and topology output. Returns its path, for gpus.nvidia_smi.
    /// </summary>
    public string WriteFakeNvidiaSmi(string query, string topology)
    {
        var directory = Path.Combine(Root, "fake-nvidia-smi");
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "query.txt"), query);
        File.WriteAllText(Path.Combine(directory, "topo.txt"), topology);
        var script = Path.Combine(directory, "nvidia-smi");
        File.WriteAllText(script, $"#!/bin/bash\nif [ \"$1\" = topo ]; then cat '{directory}/topo.txt'; else cat '{directory}/query.txt'; fi\n");
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return script;
    }

    /// <summary>
    /// Set for every process of the executor this workspace starts (the simulator, whose stage
    /// calls and detached processes inherit it, and verbs called directly), on top of the test's
    /// own environment: the clock-jump tests give the executor a wall clock of their own.
    /// </summary>
    public Dictionary<string, string?> ExecutorEnvironment { get; } = new();

    /// <summary>Runs one protocol verb of the binary directly, with the given environment (and <see cref="ExecutorEnvironment"/>).</summary>
    public async Task<(int ExitCode, string Stdout, string Stderr)> CallVerbAsync(IReadOnlyDictionary<string, string?> environment, params string[] verb)
    {
        var merged = new Dictionary<string, string?>(ExecutorEnvironment);
        foreach (var (key, value) in environment)
            merged[key] = value;
        var (exitCode, stdout, stderr) = await Testbed.RunAsync(Testbed.Binary, ["--config", ConfigPath, .. verb], merged, Root);
        _outputs.Add(($"the output of `{string.Join(' ', verb)}`", stdout + stderr));
        return (exitCode, stdout, stderr);
    }

    /// <summary>What the executor printed in this workspace, for <see cref="SecretHygiene"/>.</summary>
    private readonly System.Collections.Concurrent.ConcurrentBag<(string Where, string Text)> _outputs = [];

    public void Dispose()
    {
        try
        {
            // Every test that runs the executor in a workspace ends with this search: no secret
            // it configured may be in anything the executor printed or wrote.
            SecretHygiene.AssertNoneLeaked(Root, ConfigPath, _outputs);
        }
        finally
        {
            DeleteRoot();
        }
    }

    private void DeleteRoot()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // Files written by root inside containers are still ours to delete as root; anything
            // else left behind is only a temp dir.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>
/// What must never reach a job log (issue 11), checked on every job the integration suite runs:
/// bash's notices of a process that a stop's signal ended ("Terminated", "line 5: 31 Killed
/// bash …") and the stage server's own diagnostics ("gpu-executor-stage-server: line 18: …").
/// </summary>
internal static partial class JobLogHygiene
{
    public static void AssertClean(string log)
    {
        var stray = StrayLine().Match(log);
        Assert.False(stray.Success, $"a stray line reached the job log: '{stray.Value}'\n{log}");
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^(?:.*: line [0-9]+: +[0-9]+ +)?(?:Terminated|Killed)\b.*$|gpu-executor-stage-server", System.Text.RegularExpressions.RegexOptions.Multiline)]
    private static partial System.Text.RegularExpressions.Regex StrayLine();
}

internal static class Text
{
    public static string Lines(params string[] lines) => string.Join('\n', lines) + "\n";
    public static readonly UTF8Encoding Utf8 = new(false);
}
