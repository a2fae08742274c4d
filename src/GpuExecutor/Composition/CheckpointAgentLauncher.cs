using System.Globalization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Composition;

/// <summary>
/// Starts the checkpoint agent (this binary's `checkpoints agent` verb) as a process of its own
/// session, with its output in a file: it must outlive prepare, every later stage, and the
/// runner, until the job's container is gone and its last commit done. A fixed shell line does
/// the redirection; every value travels as an argument, never inside the line.
/// </summary>
public sealed class CheckpointAgentLauncher(string stateDir, string configPath) : ICheckpointAgentLauncher
{
    public string Start(long jobId, string runKey, string container)
    {
        var directories = RunDirectories.For(stateDir, runKey);
        var binary = Environment.ProcessPath ?? throw new SystemFailureException("cannot tell where the gpu-executor binary is, to start the checkpoint agent.");
        var agentLog = Path.Combine(directories.Root, $"agent-{jobId.ToString(CultureInfo.InvariantCulture)}.log");
        var start = new System.Diagnostics.ProcessStartInfo("setsid")
        {
            UseShellExecute = false,
            ArgumentList =
            {
                // nice: snapshots and uploads yield the CPU to the trainer's data loading.
                "-f", "nice", "-n", "10", "sh", "-c", "exec \"$0\" \"$@\" >>\"$GPU_EXECUTOR_AGENT_LOG\" 2>&1 </dev/null",
                binary, "--config", configPath, "checkpoints", "agent",
                jobId.ToString(CultureInfo.InvariantCulture), runKey, container,
            },
            Environment = { ["GPU_EXECUTOR_AGENT_LOG"] = agentLog },
        };
        using var process = System.Diagnostics.Process.Start(start) ?? throw new SystemFailureException("could not start the checkpoint agent.");
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new SystemFailureException($"could not start the checkpoint agent: setsid exited with {process.ExitCode}.");
        return agentLog;
    }
}
