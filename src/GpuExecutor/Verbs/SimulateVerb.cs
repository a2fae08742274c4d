using System.Globalization;
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
    private const string Usage = """
        usage: gpu-executor [--config PATH] simulate JOB.json [OPTIONS]
          --executor PATH               executor binary to drive (default: this one)
          --cancel-after SECONDS        cancel the job this long into its first user step
          --graceful-kill-timeout S     runner's SIGTERM-to-SIGKILL wait (default 600)
          --force-kill-timeout S        wait after SIGKILL (default 10)
          --timeout-cleanup-wait S      on job timeout, wait this long before cleanup (default 300)
          --prepare-retry-delay S       pause between preparation attempts (default 3)
          --job-id N                    job id to use (default: the job file's, else random)
          --result FILE                 write the outcome and every call as JSON
        """;

    public static async Task<string> RunAsync(string[] args, string configPath, TextWriter stdout, CancellationToken cancelJob)
    {
        if (args.Length == 0 || args[0].StartsWith("--", StringComparison.Ordinal))
            throw new UsageException(Usage);

        var jobPath = Path.GetFullPath(args[0]);
        var (executable, prefix) = DefaultExecutor();
        string? resultPath = null;
        long? jobId = null;
        var options = new SimulatorOptions { Executable = executable, JobDirectory = Path.GetDirectoryName(jobPath)! };
        for (var index = 1; index < args.Length; index += 2)
        {
            if (index + 1 >= args.Length)
                throw new UsageException($"option {args[index]} needs a value.\n{Usage}");
            var value = args[index + 1];
            switch (args[index])
            {
                case "--executor": executable = Path.GetFullPath(value); prefix = []; break;
                case "--cancel-after": options = options with { CancelAfter = Seconds(value) }; break;
                case "--graceful-kill-timeout": options = options with { GracefulKillTimeout = Seconds(value) }; break;
                case "--force-kill-timeout": options = options with { ForceKillTimeout = Seconds(value) }; break;
                case "--timeout-cleanup-wait": options = options with { TimeoutCleanupWait = Seconds(value) }; break;
                case "--prepare-retry-delay": options = options with { PrepareRetryDelay = Seconds(value) }; break;
                case "--job-id": jobId = long.Parse(value, CultureInfo.InvariantCulture); break;
                case "--result": resultPath = Path.GetFullPath(value); break;
                default:
                    throw new UsageException($"unknown option {args[index]}.\n{Usage}");
            }
        }

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

    private static TimeSpan Seconds(string value) =>
        TimeSpan.FromSeconds(double.Parse(value, NumberStyles.Float, CultureInfo.InvariantCulture));

    /// <summary>This binary; under `dotnet gpu-executor.dll` that is the host plus the dll.</summary>
    internal static (string Executable, string[] Prefix) DefaultExecutor()
    {
        var processPath = Environment.ProcessPath ?? "gpu-executor";
        return Path.GetFileNameWithoutExtension(processPath) == "dotnet"
            ? (processPath, [Path.Combine(AppContext.BaseDirectory, "gpu-executor.dll")])
            : (processPath, []);
    }
}
