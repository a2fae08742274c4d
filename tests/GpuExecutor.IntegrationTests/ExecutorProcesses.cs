namespace GpuExecutor.IntegrationTests;

/// <summary>The executor's processes of one workspace, found in /proc by the binary and the workspace's config path.</summary>
internal static class ExecutorProcesses
{
    /// <summary>Each process's pid, its /proc directory, and its call: the words after `--config PATH` (the verb and its arguments).</summary>
    public static IEnumerable<(int Pid, string ProcDirectory, string[] Call)> Of(string configPath)
    {
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), out var pid))
                continue;
            string[] arguments;
            try
            {
                arguments = File.ReadAllText(Path.Combine(directory, "cmdline")).Split('\0', StringSplitOptions.RemoveEmptyEntries);
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                // The process ended while it was read.
                continue;
            }
            var config = Array.IndexOf(arguments, configPath);
            if (config < 0 || arguments[0] != Testbed.Binary || config + 1 >= arguments.Length)
                continue;
            yield return (pid, directory, arguments[(config + 1)..]);
        }
    }
}
