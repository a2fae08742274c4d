using System.Text.Json;
using GpuExecutor.Outcomes;
using GpuExecutor.Simulation;

namespace GpuExecutor.Verbs;

/// <summary>
/// `simulate JOB`: play GitLab Runner against this executor (or another, with --executor).
/// SIGINT or SIGTERM to the simulator cancels the job, like the Cancel button in GitLab.
/// Not a protocol verb: it returns the job's outcome, which ExitCodes.FromSimulation
/// turns into its exit code, and a bad command line is a <see cref="UsageException"/>.
/// </summary>
public static class SimulateVerb
{
    /// <summary>What `simulate` was asked, as <see cref="VerbCommands"/> parsed it; null means the default.</summary>
    public sealed record Request(string JobFile, string? Executor, double? CancelAfter, double? GracefulKillTimeout, double? ForceKillTimeout,
        double? TimeoutCleanupWait, double? PrepareRetryDelay, long? JobId, string? ResultFile);

    public static async Task<string> RunAsync(Request request, string configPath, TextWriter stdout, CancellationToken cancelJob)
    {
        var jobPath = Path.GetFullPath(request.JobFile);
        var (executable, prefix) = DefaultExecutor();
        if (request.Executor is not null)
            (executable, prefix) = (Path.GetFullPath(request.Executor), []);
        var resultPath = request.ResultFile is null ? null : Path.GetFullPath(request.ResultFile);
        var jobId = request.JobId;
        var options = new SimulatorOptions { Executable = executable, JobDirectory = Path.GetDirectoryName(jobPath)! };
        if (request.CancelAfter is { } cancelAfter)
            options = options with { CancelAfter = TimeSpan.FromSeconds(cancelAfter) };
        if (request.GracefulKillTimeout is { } graceful)
            options = options with { GracefulKillTimeout = TimeSpan.FromSeconds(graceful) };
        if (request.ForceKillTimeout is { } force)
            options = options with { ForceKillTimeout = TimeSpan.FromSeconds(force) };
        if (request.TimeoutCleanupWait is { } cleanupWait)
            options = options with { TimeoutCleanupWait = TimeSpan.FromSeconds(cleanupWait) };
        if (request.PrepareRetryDelay is { } retryDelay)
            options = options with { PrepareRetryDelay = TimeSpan.FromSeconds(retryDelay) };

        SimulatedJob job;
        try
        {
            job = SimulatedJob.Load(jobPath);
        }
        catch (Exception error) when (error is IOException or JsonException or InvalidDataException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot read job file '{jobPath}': {error.Message}");
        }
        if (jobId is not null)
            job.JobId = jobId;

        options = options with { Executable = executable, ExecutorArguments = [.. prefix, "--config", Path.GetFullPath(configPath)] };
        var result = await new RunnerSimulator(options, stdout).RunAsync(job, cancelJob);
        if (resultPath is not null)
            await File.WriteAllTextAsync(resultPath, JsonSerializer.Serialize(result, SimulationJsonContext.Default.SimulationResult), CancellationToken.None);

        return result.Outcome;
    }

    /// <summary>This binary; under `dotnet gpu-executor.dll` that is the host plus the dll.</summary>
    internal static (string Executable, string[] Prefix) DefaultExecutor()
    {
        var processPath = Environment.ProcessPath ?? "gpu-executor";
        return Path.GetFileNameWithoutExtension(processPath) == "dotnet"
            ? (processPath, [Path.Combine(AppContext.BaseDirectory, "gpu-executor.dll")])
            : (processPath, []);
    }
}
