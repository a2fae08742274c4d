using System.Globalization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Datasets;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Composition;

/// <summary>
/// Starts one of this binary's verbs as a process of its own session, niced, with its output in
/// a file: the checkpoint agent and the dataset stream fetcher must outlive prepare, every later
/// stage, and the runner. A fixed shell line does the redirection; every value travels as an
/// argument, never inside the line.
/// </summary>
internal static class DetachedVerb
{
    public static void Start(string what, string configPath, string logPath, params string[] verb)
    {
        var binary = Environment.ProcessPath ?? throw new SystemFailureException($"cannot tell where the gpu-executor binary is, to start the {what}.");
        var start = new System.Diagnostics.ProcessStartInfo("setsid")
        {
            UseShellExecute = false,
            // nice and ionice: its copies, uploads and downloads yield the CPU and the disk to the
            // trainer's own data loading.
            ArgumentList = { "-f", "nice", "-n", "10", "ionice", "-c", "2", "-n", "7", "sh", "-c", "exec \"$0\" \"$@\" >>\"$GPU_EXECUTOR_DETACHED_LOG\" 2>&1 </dev/null", binary, "--config", configPath },
            Environment = { ["GPU_EXECUTOR_DETACHED_LOG"] = logPath },
        };
        foreach (var argument in verb)
            start.ArgumentList.Add(argument);
        using var process = System.Diagnostics.Process.Start(start) ?? throw new SystemFailureException($"could not start the {what}.");
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new SystemFailureException($"could not start the {what}: setsid exited with {process.ExitCode}.");
    }
}

/// <summary>Starts the checkpoint agent (`checkpoints agent`), which lives until the job's container is gone and its last commit done.</summary>
public sealed class CheckpointAgentLauncher(string stateDir, string configPath) : ICheckpointAgentLauncher
{
    public string Start(long jobId, string runKey, string container)
    {
        var directories = RunDirectories.For(stateDir, runKey);
        var agentLog = Path.Combine(directories.Root, $"agent-{jobId.ToString(CultureInfo.InvariantCulture)}.log");
        DetachedVerb.Start("checkpoint agent", configPath, agentLog, "checkpoints", "agent", jobId.ToString(CultureInfo.InvariantCulture), runKey, container);
        return agentLog;
    }
}

/// <summary>Starts a job's dataset stream fetcher (`datasets stream`), which lives until its objects are in or the job is gone.</summary>
public sealed class DatasetStreamLauncher(string stateDir, string configPath) : IDatasetStreamLauncher
{
    public string Start(long jobId)
    {
        var streamLog = DatasetStreams.LogFile(new DatasetCache(stateDir, _ => { }).ViewsOf(jobId));
        DetachedVerb.Start("dataset stream", configPath, streamLog, "datasets", "stream", jobId.ToString(CultureInfo.InvariantCulture));
        return streamLog;
    }
}

/// <summary>Starts a job's GPU sampler (`gpus sample`), which lives as long as the job's container.</summary>
public sealed class GpuSamplerLauncher(string stateDir, string configPath) : Telemetry.IGpuSamplerLauncher
{
    public string Start(long jobId)
    {
        var samplerLog = Telemetry.GpuTelemetryFiles.SamplerLog(stateDir, jobId);
        Directory.CreateDirectory(Path.GetDirectoryName(samplerLog)!);
        DetachedVerb.Start("GPU sampler", configPath, samplerLog, "gpus", "sample", jobId.ToString(CultureInfo.InvariantCulture));
        return samplerLog;
    }
}
