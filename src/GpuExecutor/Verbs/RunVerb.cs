using GpuExecutor.Containers;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Stages;

namespace GpuExecutor.Verbs;

/// <summary>
/// `run SCRIPT STAGE`: pipe the runner's script (a file on the host) into bash inside the job's
/// container, stream its output live, and report its exit code the way the runner expects.
/// </summary>
public static class RunVerb
{
    public static async Task<int> RunAsync(VerbContext context, string scriptPath, string stageName)
    {
        var config = context.Config;
        var job = JobIdentity.From(JobPayloadReader.Read(context.Environment));
        var container = JobContainerNames.ForStage(job.JobId, stageName, hasHelper: config.Images.Helper.Length > 0);

        FileStream script;
        try
        {
            script = new FileStream(scriptPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new SystemFailureException($"the stage script '{scriptPath}' cannot be read: {error.Message}", error);
        }

        using var driver = new DockerContainerDriver(config.Docker.Endpoint);
        StageResult result;
        await using (script)
        {
            // Raw, unbuffered standard streams: output reaches the job log as it is produced, and
            // memory stays flat however long the stage prints.
            await using var stdout = Console.OpenStandardOutput();
            await using var stderr = Console.OpenStandardError();
            var runner = new StageRunner(driver, config.Run, message => context.Log.WriteLine(message));
            result = await runner.RunAsync(container, script, stdout, stderr, context.Stop);
        }

        if (result.ExitCode == 0)
            return ExitCodes.Success;

        // A failing script and a container that died under it (OOM-killed init, daemon restart,
        // removed by hand) look alike from the exec; only the latter is the host's fault.
        using var check = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var running = await driver.IsRunningAsync(container, check.Token);
        if (running != true && !result.Stopped)
            throw new SystemFailureException($"container '{container}' {(running is null ? "disappeared" : "stopped")} while stage '{stageName}' ran.");

        var exitCode = (int)Math.Clamp(result.ExitCode, 1, int.MaxValue);
        throw new BuildFailureException(result.Stopped ? $"stage '{stageName}' was stopped (exit code {exitCode})." : "", exitCode);
    }
}
